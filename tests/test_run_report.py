"""The start-of-run report (hfgd_tf/run_report.py) and --distribution=auto / tpu
(hfgd_tf/distribution.py): the machine's facts are faked (sysfs, device files, TensorFlow's device
lists), so every machine kind is checked on this CPU one; two runs of main.py check what a person
sees."""

import dataclasses
import logging
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from absl import flags

from hfgd_tf import distribution, run_report
from hfgd_tf.config import FlagError
from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.flags import define_all_flags, settings_from_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADLINE = os.path.join(ROOT, "experiments", "pascal_context",
                        "hfgd-os4_r50_bs16-30k_pascal-context-59-513.cfg")
CPU_BOX = run_report.Machine(tensorflow_wheels={"tensorflow": "2.21.0"}, built_with_cuda=True,
                             cuda_version="12.5.1", cudnn_version="9", gpus=[], cpus=1,
                             tpu_chips=0, nvidia_device="")
GPU_BOX = dataclasses.replace(CPU_BOX, gpus=["NVIDIA A100-SXM4-80GB"] * 8,
                              nvidia_device="/dev/nvidia0")


def _settings(*arguments, mode="train"):
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(expand_flagfiles(["main.py", *arguments]))
  return settings_from_flags(flag_values, mode)


class _Strategy:
  """What the report reads of a strategy, for replica counts this process cannot create."""

  def __init__(self, replicas):
    self.num_replicas_in_sync = replicas
    self.extended = type("Extended", (), {"worker_devices": [
        f"/job:localhost/replica:0/task:0/device:GPU:{index}" for index in range(replicas)]})()


def _pci_device(root, name, vendor, device):
  folder = root / name
  folder.mkdir()
  (folder / "vendor").write_text(vendor + "\n")
  (folder / "device").write_text(device + "\n")


def test_auto_is_the_default_distribution():
  assert _settings(f"--flagfile={HEADLINE}").train.distribution == "auto"


def test_tpu_chips_are_counted_on_the_pci_bus_without_the_network_card(tmp_path):
  _pci_device(tmp_path, "0000:00:04.0", "0x1ae0", "0x0042")  # gVNIC: Google's, not a TPU
  _pci_device(tmp_path, "0000:00:05.0", "0x10de", "0x20b0")  # an NVIDIA A100
  assert distribution.attached_tpu_chips(str(tmp_path)) == 0
  for index in range(4):  # a v4-8 host: four chips
    _pci_device(tmp_path, f"0000:00:0{6 + index}.0", "0x1ae0", "0x005e")
  assert distribution.attached_tpu_chips(str(tmp_path)) == 4
  assert distribution.attached_tpu_chips(str(tmp_path / "missing")) == 0


@pytest.mark.parametrize("tpu_chips,gpus,expected", [
    (4, 0, "tpu"), (0, 8, "mirrored"), (0, 1, "one_device"), (0, 0, "one_device")])
def test_auto_takes_the_tpu_then_all_gpus_then_one_device(monkeypatch, tpu_chips, gpus,
                                                          expected):
  monkeypatch.setattr(distribution, "attached_tpu_chips", lambda: tpu_chips)
  listed = {"GPU": [f"/device:GPU:{index}" for index in range(gpus)]}
  monkeypatch.setattr(tf.config, "list_logical_devices",
                      lambda kind=None: listed.get(kind, ["/device:CPU:0"]))
  assert distribution.resolve_distribution() == expected


def test_tpu_without_its_wheel_or_without_a_tpu_is_one_error_naming_the_fix(monkeypatch):
  monkeypatch.setattr(distribution, "attached_tpu_chips", lambda: 4)
  monkeypatch.setattr(distribution, "tpu_wheel_installed", lambda: False)
  # A TPU VM with requirements.txt: auto takes the TPU, which plain tensorflow cannot drive.
  with pytest.raises(FlagError, match=r"^--distribution: tpu needs .*tensorflow-tpu.*"
                     r"requirements-tpu\.txt"):
    distribution.create_strategy("auto")
  monkeypatch.setattr(distribution, "attached_tpu_chips", lambda: 0)
  monkeypatch.setattr(distribution, "tpu_wheel_installed", lambda: True)
  with pytest.raises(FlagError, match="^--tpu: local but no TPU is attached to this host"):
    distribution.create_strategy("tpu", tpu="local")


def test_no_cuda_libraries_on_a_gpu_box_warns_why_and_how_long():
  settings = _settings(f"--flagfile={HEADLINE}", "--distribution=mirrored")
  no_libraries = dataclasses.replace(CPU_BOX, nvidia_device="/dev/nvidia0")
  [warning] = run_report.machine_warnings(no_libraries, _Strategy(1), settings, steps_left=30000)
  assert "--distribution=mirrored (1 replica(s))" in warning
  assert "--mixed_precision=auto" in warning
  assert "its CUDA libraries did not load" in warning and "requirements-gpu.txt" in warning
  # 30000 x 16 images at 513^2 x 11 s per image-megapixel: 16.1 days, the measured 16.
  assert "16.1 days for 30000 steps of 16 images at 513x513" in warning
  cpu_build = dataclasses.replace(no_libraries, built_with_cuda=False)
  [warning] = run_report.machine_warnings(cpu_build, _Strategy(1), settings)
  assert "this TensorFlow build has no CUDA" in warning and "days" not in warning


def test_the_right_machine_gives_no_warning_and_idle_devices_or_two_wheels_do():
  settings = _settings(f"--flagfile={HEADLINE}")
  assert run_report.machine_warnings(GPU_BOX, _Strategy(8), settings, steps_left=30000) == []
  [idle] = run_report.machine_warnings(GPU_BOX, _Strategy(1), _settings(
      f"--flagfile={HEADLINE}", "--distribution=one_device"))
  assert idle.startswith("8 GPUs found but --distribution=one_device uses 1")
  two_wheels = dataclasses.replace(GPU_BOX, tensorflow_wheels={"tensorflow": "2.21.0",
                                                               "tensorflow-tpu": "2.20.0"})
  [shared] = run_report.machine_warnings(two_wheels, _Strategy(8), settings)
  assert shared.startswith("tensorflow and tensorflow-tpu are installed together")
  # A CPU recipe on a CPU, or a mode that needs no accelerator: nothing to say.
  demo = os.path.join(ROOT, "experiments", "builtin", "demo.cfg")
  assert run_report.machine_warnings(CPU_BOX, _Strategy(1), _settings(f"--flagfile={demo}")) == []
  assert run_report.machine_warnings(CPU_BOX, None, _settings(
      f"--flagfile={HEADLINE}", "--mode=flops", mode="flops")) == []


def test_the_report_names_versions_devices_strategy_precision_and_xla(caplog):
  settings = _settings(f"--flagfile={HEADLINE}")
  with caplog.at_level(logging.INFO, logger="absl"):  # whatever verbosity earlier tests left
    warnings = run_report.log_run_report(settings, tf.distribute.OneDeviceStrategy("/cpu:0"),
                                         "none", False, steps_left=100)
  [block] = [record.getMessage() for record in caplog.records
             if record.getMessage().startswith("Run train on:")]
  build = tf.sysconfig.get_build_info()
  cuda = (f"CUDA {build['cuda_version']}, cuDNN {build['cudnn_version']}"
          if tf.test.is_built_with_cuda() else "no CUDA")
  assert f"TensorFlow {tf.__version__} (tensorflow" in block and f"build: {cuda})" in block
  assert "Keras 3." in block and "devices: 1 CPU; GPU: none" in block
  assert "strategy: OneDeviceStrategy (--distribution=auto), 1 replica(s) on CPU:0" in block
  assert "precision: float32 (--mixed_precision=auto); XLA: off (--jit_compile=auto)" in block
  assert [record.getMessage() for record in caplog.records
          if record.levelno == logging.WARNING] == warnings
  assert len(warnings) == 1 and "on a machine without an accelerator" in warnings[0]


def _main(*arguments):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *arguments],
                        capture_output=True, text=True, env=env, timeout=300, check=False)


def _tiny(tmp_path):
  return ["--dataset=builtin", f"--data_dir={tmp_path}/data", "--builtin_num_train=4",
          "--builtin_num_val=2", "--backbone=resnet_tiny", "--encoder_filters=8",
          "--cae_car_filters=8", "--decoder_filters=8", "--crop_height=33", "--crop_width=33",
          "--batch_size=2", "--train_steps=1", "--eval_after_train=false",
          "--backbone_weights=none", f"--model_dir={tmp_path}/run"]


def test_main_stops_a_tpu_run_without_a_tpu_wheel_in_one_line(tmp_path):
  # This machine has plain tensorflow and no TPU: one line naming what to install, no traceback.
  result = _main(*_tiny(tmp_path), "--distribution=tpu", "--tpu=local")
  assert result.returncode == 1 and "Traceback" not in result.stderr
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("error: --distribution: tpu needs TensorFlow's TPU kernels, which "
                              "only the tensorflow-tpu wheel has"), result.stderr[-3000:]
  assert "install requirements-tpu.txt" in last_line
  assert not (tmp_path / "data").exists()  # stopped before any work


@pytest.mark.slow  # a training step in a subprocess: 20-60 s on 2 loaded cores
def test_main_with_mirrored_on_a_cpu_reports_the_machine_and_warns_once(tmp_path):
  result = _main(*_tiny(tmp_path), "--distribution=mirrored", "--mixed_precision=auto")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Run train on:" in result.stderr and "strategy: MirroredStrategy" in result.stderr
  warnings = [line for line in result.stderr.splitlines()
              if line.startswith("W") and "without an accelerator" in line]
  assert len(warnings) == 1 and "Predicted wall time" in warnings[0], result.stderr[-3000:]
