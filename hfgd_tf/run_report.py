"""What a run runs on, logged once at its start (as mmseg prints at the top of every run), and a
WARNING when that is not what the run needs.

The block names the TensorFlow wheel and its CUDA / cuDNN build, Keras, the devices TensorFlow
found, the strategy and its replicas, and the precision and XLA setting resolved. The warnings
catch what otherwise goes unnoticed: a multi-device strategy or a paper recipe on a machine where
TensorFlow finds no accelerator (with why, and the predicted wall time), devices the strategy
leaves idle, and two TensorFlow wheels in one environment.
"""

import dataclasses
import glob
import importlib.metadata
import os
import platform
import shutil

import keras
import tensorflow as tf
from absl import logging

from hfgd_tf import distribution as distribution_lib

# The pip distributions that install the `tensorflow` package; two of them share its folder.
TENSORFLOW_WHEELS = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu", "tensorflow-intel",
                     "tf-nightly")
# Seconds per training step and image-megapixel on a CPU, for the wall time predicted when a
# recipe meant for accelerators starts on one: the headline recipe (ResNet-50 HFGD OS=4) took
# 5.8 s per step of 2 images at 513x513 on the project's 2-core machine (5.8 / (2 x 0.263)).
CPU_SECONDS_PER_IMAGE_MEGAPIXEL = 11.0
# The modes whose time an accelerator decides (flops, predict and export are quick anywhere).
COMPUTE_MODES = ("train", "pretrain", "eval", "benchmark")


@dataclasses.dataclass
class Machine:
  """What this process sees: the facts the report and the warnings are made of."""
  tensorflow_wheels: dict  # installed distribution -> version
  built_with_cuda: bool
  cuda_version: str
  cudnn_version: str
  gpus: list  # GPU names, one per physical GPU TensorFlow lists
  cpus: int
  tpu_chips: int
  nvidia_device: str  # an NVIDIA device file or nvidia-smi found, "" when none


def _installed_tensorflow_wheels():
  wheels = {}
  for name in TENSORFLOW_WHEELS:
    try:
      wheels[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return wheels


def _nvidia_device():
  """A sign of an NVIDIA GPU that needs no CUDA library: a device file or nvidia-smi."""
  devices = sorted(glob.glob("/dev/nvidia[0-9]*")) or [
      path for path in ("/dev/nvidiactl", "/dev/dxg") if os.path.exists(path)]
  if devices:
    return devices[0]
  return shutil.which("nvidia-smi") or ""


def machine():
  """The Machine this process runs on (TensorFlow's view, plus what it may have missed)."""
  build = tf.sysconfig.get_build_info()
  gpus = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
          for gpu in tf.config.list_physical_devices("GPU")]
  return Machine(tensorflow_wheels=_installed_tensorflow_wheels(),
                 built_with_cuda=tf.test.is_built_with_cuda(),
                 cuda_version=build.get("cuda_version", ""),
                 cudnn_version=build.get("cudnn_version", ""), gpus=gpus,
                 cpus=len(tf.config.list_physical_devices("CPU")),
                 tpu_chips=distribution_lib.attached_tpu_chips(), nvidia_device=_nvidia_device())


def _strategy_line(strategy, distribution):
  if strategy is None:
    return "strategy: none (this mode runs on TensorFlow's default device)"
  try:
    worker_devices = strategy.extended.worker_devices
  except RuntimeError:  # TensorFlow's default strategy lists none
    return "strategy: TensorFlow's default (one device)"
  # Local devices by their short names (CPU:0, GPU:1); other hosts' in full.
  devices = [device.split("/device:")[-1] if device.startswith("/job:localhost/") else device
             for device in worker_devices]
  shown = ", ".join(devices[:4]) + (f", ... ({len(devices)} in all)" if len(devices) > 4 else "")
  return (f"strategy: {type(strategy).__name__} (--distribution={distribution}), "
          f"{strategy.num_replicas_in_sync} replica(s) on {shown}")


def _has_accelerator(facts, strategy):
  return bool(facts.gpus) or isinstance(strategy, tf.distribute.TPUStrategy)


def report_lines(facts, strategy, settings, mixed_precision, jit_compile):
  """The start-of-run block: versions, devices, strategy, precision and XLA (resolved, and the
  flag that asked for it)."""
  wheels = ", ".join(f"{name} {version}" for name, version in facts.tensorflow_wheels.items())
  build = (f"CUDA {facts.cuda_version}, cuDNN {facts.cudnn_version}" if facts.built_with_cuda
           else "no CUDA")
  tpus = (len(tf.config.list_logical_devices("TPU"))
          if isinstance(strategy, tf.distribute.TPUStrategy) else 0)
  gpus = ", ".join(facts.gpus) if facts.gpus else "none"
  logical_cpus = len(tf.config.list_logical_devices("CPU"))
  cpus = f"{facts.cpus} CPU" + (f" ({logical_cpus} logical)" if logical_cpus > facts.cpus else "")
  compute_dtype = "float32" if mixed_precision == "none" else mixed_precision
  return [
      f"TensorFlow {tf.__version__} ({wheels or 'wheel unknown'}; build: {build}), Keras "
      f"{keras.__version__}, Python {platform.python_version()}",
      f"devices: {cpus}; GPU: {gpus}; TPU: {tpus} core(s) in use, "
      f"{facts.tpu_chips} chip(s) attached",
      _strategy_line(strategy, settings.train.distribution),
      f"precision: {compute_dtype} (--mixed_precision={settings.train.mixed_precision}); XLA: "
      f"{'on' if jit_compile else 'off'} (--jit_compile={settings.train.jit_compile})",
  ]


def no_accelerator_reason(facts):
  """Why TensorFlow lists no GPU here, and what to do about it."""
  if facts.nvidia_device and facts.built_with_cuda:
    return (f"this machine has an NVIDIA GPU ({facts.nvidia_device}) and TensorFlow is built with "
            f"CUDA {facts.cuda_version}, but TensorFlow lists no GPU: its CUDA libraries did not "
            "load (install requirements-gpu.txt, i.e. tensorflow[and-cuda]; check the driver "
            "with nvidia-smi and CUDA_VISIBLE_DEVICES)")
  if facts.nvidia_device:
    return (f"this machine has an NVIDIA GPU ({facts.nvidia_device}) but this TensorFlow build "
            "has no CUDA (tensorflow-cpu or tensorflow-tpu): install requirements-gpu.txt into a "
            "fresh virtual environment")
  if facts.tpu_chips:
    return (f"{facts.tpu_chips} TPU chip(s) are attached but the run does not use them: use "
            f"--distribution=auto or tpu with {distribution_lib.TPU_WHEEL} "
            "(requirements-tpu.txt)")
  return "TensorFlow finds no GPU or TPU here (no NVIDIA device, no TPU on the PCI bus)"


def predicted_cpu_hours(steps, batch_size, height, width):
  """Hours `steps` training steps take on a 2-core CPU (CPU_SECONDS_PER_IMAGE_MEGAPIXEL)."""
  return steps * batch_size * height * width / 1e6 * CPU_SECONDS_PER_IMAGE_MEGAPIXEL / 3600


def _duration(hours):
  if hours >= 48:
    return f"{hours / 24:.1f} days"
  return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def machine_warnings(facts, strategy, settings, steps_left=None):
  """WARNING lines for a run that does not get the machine it needs."""
  train = settings.train
  warnings = []
  if len(facts.tensorflow_wheels) > 1:
    warnings.append(
        f"{' and '.join(facts.tensorflow_wheels)} are installed together: they share one "
        "tensorflow/ folder, file by file whichever installed last; use one per virtual "
        "environment (requirements.txt, requirements-gpu.txt or requirements-tpu.txt)")
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  wants = []
  if replicas > 1 or train.distribution in ("mirrored", "multi_worker", "tpu"):
    wants.append(f"--distribution={train.distribution} ({replicas} replica(s))")
  if train.mixed_precision == "auto":
    wants.append("a recipe for accelerators (--mixed_precision=auto, as the paper's)")
  if wants and settings.mode in COMPUTE_MODES and not _has_accelerator(facts, strategy):
    message = (f"{' and '.join(wants)} on a machine without an accelerator: "
               f"{no_accelerator_reason(facts)}.")
    if steps_left:
      hours = predicted_cpu_hours(steps_left, train.batch_size, train.augment.crop_height,
                                  train.augment.crop_width)
      message += (f" Predicted wall time on a 2-core CPU: {_duration(hours)} for {steps_left} "
                  f"steps of {train.batch_size} images at {train.augment.crop_height}x"
                  f"{train.augment.crop_width} (about {CPU_SECONDS_PER_IMAGE_MEGAPIXEL:g} s per "
                  "image-megapixel; more cores divide it).")
    warnings.append(message)
  elif facts.tpu_chips and not isinstance(strategy, tf.distribute.TPUStrategy):
    warnings.append(no_accelerator_reason(dataclasses.replace(facts, nvidia_device="")))
  if len(facts.gpus) > 1 and strategy is not None and replicas < len(facts.gpus):
    warnings.append(f"{len(facts.gpus)} GPUs found but --distribution={train.distribution} "
                    f"uses {replicas}: use --distribution=auto or mirrored for all of them")
  return warnings


def log_run_report(settings, strategy, mixed_precision, jit_compile, steps_left=None):
  """Logs the start-of-run block, then each warning as a WARNING line; returns the warnings.

  strategy: the run's (None: modes that use the default device); mixed_precision: the resolved
  compute dtype; jit_compile: the resolved XLA setting; steps_left: training steps to go (for
  the predicted wall time)."""
  facts = machine()
  logging.info("Run %s on:\n  %s", settings.mode, "\n  ".join(report_lines(
      facts, strategy, settings, mixed_precision, jit_compile)))
  warnings = machine_warnings(facts, strategy, settings, steps_left)
  for warning in warnings:
    logging.warning("%s", warning)
  return warnings

