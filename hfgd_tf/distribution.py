"""The tf.distribute strategy a run asks for (`auto`: what this machine has), and who writes files
under multi-worker training."""

import glob
import importlib.metadata
import os
import shutil

import tensorflow as tf
from absl import logging

from hfgd_tf.config import FlagError

# The resolvers each distribution accepts; the first is its default.
_RESOLVERS_OF = {"multi_worker": ("tf_config", "slurm"), "tpu": ("tpu",)}


def create_strategy(distribution="auto", tpu=None, cluster_resolver=None,
                    slurm_port_base=8888):
  """auto (see resolve_distribution), one_device (first GPU, else CPU), mirrored (all local GPUs;
  all logical CPUs when there is no GPU), multi_worker (the cluster from `cluster_resolver`:
  tf_config, the default, or slurm) or tpu (TPUClusterResolver(tpu)).

  Create one per process: a second MirroredStrategy in the same process breaks its collectives.
  A TPU that cannot work here (no TPU wheel, no TPU attached, no answer) is a FlagError of one
  line naming what to install or set.
  """
  if distribution == "auto":
    distribution, tpu = resolve_distribution(), "local"
  if cluster_resolver is not None and cluster_resolver not in _RESOLVERS_OF.get(distribution, ()):
    raise ValueError(f"--cluster_resolver: {cluster_resolver} does not apply to distribution="
                     f"{distribution} (multi_worker: tf_config or slurm; tpu: tpu)")
  if distribution == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if distribution == "mirrored":
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])
  if distribution == "multi_worker":
    resolver = (slurm_cluster_resolver(slurm_port_base) if cluster_resolver == "slurm"
                else tf.distribute.cluster_resolver.TFConfigClusterResolver())
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    logging.info("Worker %s:%s of %s.", resolver.task_type, resolver.task_id,
                 resolver.cluster_spec().as_dict())
    return strategy
  if distribution == "tpu":
    return _tpu_strategy(tpu)
  raise ValueError(f"--distribution: unknown {distribution!r}; choose auto, one_device, "
                   "mirrored, multi_worker or tpu")


# Google's PCI vendor id and the PCI device ids of its TPU chips: v2/v3, v4, v5p, v5e, v6e, 7x
# (Google's gVNIC network card shares the vendor id, so the device id decides).
_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_DEVICES = frozenset(("0x0027", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"))
PCI_DEVICES = "/sys/bus/pci/devices"
# The one distribution TensorFlow's TPU kernels come in (requirements-tpu.txt).
TPU_WHEEL = "tensorflow-tpu"
TPU_INSTALL = ("install requirements-tpu.txt (tensorflow-tpu==2.20.0 and libtpu, instead of "
               "tensorflow) into a fresh virtual environment, see docs/cloud.md")


def _read(path):
  try:
    with open(path, encoding="ascii") as file:
      return file.read().strip()
  except OSError:
    return None


def attached_tpu_chips(pci_devices=None):
  """TPU chips on this host's PCI bus, read from sysfs: loads no libtpu and asks no metadata
  server, so it is instant and cannot hang on a machine without TPUs."""
  pci_devices = pci_devices or PCI_DEVICES
  return sum(1 for device in glob.glob(os.path.join(pci_devices, "*"))
             if _read(os.path.join(device, "vendor")) == _GOOGLE_PCI_VENDOR
             and _read(os.path.join(device, "device")) in _TPU_PCI_DEVICES)


def tpu_wheel_installed():
  """Whether TensorFlow here is tensorflow-tpu (plain tensorflow has no TPU kernels)."""
  try:
    importlib.metadata.distribution(TPU_WHEEL)
  except importlib.metadata.PackageNotFoundError:
    return False
  return True


def resolve_distribution():
  """What --distribution=auto means on this machine: tpu when a TPU is attached, mirrored over
  the local GPUs when there are several, else one_device (one GPU, or the CPU)."""
  chips = attached_tpu_chips()
  if chips:
    resolved, reason = "tpu", f"{chips} TPU chip(s) attached"
  else:
    gpus = len(tf.config.list_logical_devices("GPU"))
    resolved = "mirrored" if gpus > 1 else "one_device"
    reason = f"{gpus} GPU(s), no TPU"
  logging.info("--distribution=auto: %s (%s).", resolved, reason)
  return resolved


def _tpu_strategy(tpu):
  """TPUStrategy on `tpu` ('' or 'local': this host's), or a FlagError naming the fix."""
  if not tpu_wheel_installed():
    raise FlagError(f"--distribution: tpu needs TensorFlow's TPU kernels, which only the "
                    f"{TPU_WHEEL} wheel has (this is TensorFlow {tf.__version__} without them): "
                    f"{TPU_INSTALL}")
  if tpu in ("", "local") and not attached_tpu_chips():
    raise FlagError(f"--tpu: {tpu or 'local'} but no TPU is attached to this host (none on its PCI "
                    "bus); run on a Cloud TPU VM, or name a remote TPU with --tpu=<name>")
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, RuntimeError, ImportError, tf.errors.OpError) as error:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise FlagError(f"--tpu: cannot reach TPU {tpu!r}: {first_line}") from error
  return tf.distribute.TPUStrategy(resolver)


def slurm_cluster_resolver(port_base=8888):
  """TF's SlurmClusterResolver for the job step this process is a task of (`srun`): one worker
  per task, listening on port_base + its index on its node.

  The resolver shares a node's GPUs among its tasks (CUDA_VISIBLE_DEVICES, from Slurm or
  nvidia-smi); on nodes without GPUs it would divide zero GPUs, so GPU allocation is off there.
  """
  resolver_class = tf.distribute.cluster_resolver.SlurmClusterResolver
  for name in ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST",
               "SLURM_STEP_TASKS_PER_NODE"):
    if name not in os.environ:
      raise ValueError(f"--cluster_resolver=slurm: {name} is not set; launch each worker with "
                       "srun inside a Slurm allocation")
  if os.environ.get("CUDA_VISIBLE_DEVICES") or shutil.which("nvidia-smi"):
    return resolver_class(port_base=port_base)
  tasks_per_node = max(int(count.split("(")[0])
                       for count in os.environ["SLURM_STEP_TASKS_PER_NODE"].split(","))
  return resolver_class(port_base=port_base, gpus_per_node=tasks_per_node, gpus_per_task=1,
                        auto_set_gpu=False)


def tpu_host_index(strategy):
  """This host's index in a TPU pod slice: the TPU cluster resolver's task id, or, when the same
  program runs on every host of the slice (each with a resolver of task 0), TPU_WORKER_ID, the
  host index Cloud TPU VMs are given (0 where unset: one host)."""
  task_id = strategy.cluster_resolver.task_id or 0
  return task_id or int(os.environ.get("TPU_WORKER_ID", "0") or 0)


def is_chief(strategy):
  """True on the worker that owns the run's files: the chief (or worker 0) of a multi-worker
  cluster, host 0 of a TPU pod slice, the only one otherwise."""
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return tpu_host_index(strategy) == 0
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  resolver = strategy.cluster_resolver
  if resolver.task_type is None or resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return not has_chief and resolver.task_type == "worker" and resolver.task_id == 0


def worker_dir(strategy, directory):
  """`directory` on the chief; a per-worker scratch folder on the others (they must still write,
  since saving a distributed checkpoint is collective)."""
  if is_chief(strategy):
    return directory
  task_id = (tpu_host_index(strategy) if isinstance(strategy, tf.distribute.TPUStrategy)
             else strategy.cluster_resolver.task_id)
  return os.path.join(directory, ".workers", f"worker-{task_id}")


def use_jit_compile(jit_compile="auto", strategy=None):
  """Whether to compile steps with XLA: "on", "off", or "auto" = on with GPUs or TPUs, off on
  CPUs alone (where XLA measured 2.7x slower than TensorFlow's oneDNN kernels)."""
  if jit_compile != "auto":
    return jit_compile == "on"
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return True
  return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def local_replica_count(strategy):
  """Replicas on this worker (the default strategy, which names no devices, has one)."""
  if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
    return 1
  return len(strategy.extended.worker_devices)


def train_step_jit_compile(jit_compile, strategy, deterministic=False):
  """Whether the train step compiles with XLA (`use_jit_compile`, then what the step allows).

  The step is compiled around `strategy.run`, and an XLA cluster runs on one device: with several
  replicas on one worker (mirrored, or multi-worker with several GPUs each) it fails ("Trying to
  access resource .../replica_1/... located in device CPU:1 from device CPU:0"). Compiling each
  replica's forward/backward alone cannot work either: synchronized BN all-reduces inside the
  forward pass, a cross-replica call XLA would have to nest. So there auto is off and on is a
  FlagError; one device per worker keeps XLA (GPU collectives compile; CPU ones do not, so on is
  refused for multi-worker CPUs too). TPU steps are compiled by the strategy itself (False here),
  and XLA has no deterministic max-pool gradient, so `deterministic` keeps auto off.
  """
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return False
  local_replicas = local_replica_count(strategy)
  cpus_only = not tf.config.list_logical_devices("GPU")
  if local_replicas > 1 or (strategy.num_replicas_in_sync > 1 and cpus_only):
    if jit_compile == "on":
      where = (f"{local_replicas} replicas on this worker" if local_replicas > 1
               else "collectives on CPUs")
      raise FlagError(f"--jit_compile: on cannot compile a train step with {where} (XLA runs a "
                      "step on one device); use --jit_compile=auto or off")
    if jit_compile == "auto" and use_jit_compile(jit_compile, strategy):
      logging.info("--jit_compile=auto: off for the train step (%d replicas on this worker).",
                   local_replicas)
    return False
  return use_jit_compile(jit_compile, strategy) and not deterministic
