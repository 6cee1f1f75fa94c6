"""benchmarks/device_check.sh at toy size on the CPU: every experiment timed, with its batch,
achieved rate, share of the measured matmul rate and eval images/s; a batch that runs out of
device memory is halved until one fits; the two-replica check (two logical CPUs stand in for the
two halves of a GPU) trains under MirroredStrategy in float16 with finite weights."""

import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import device_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_batch_that_does_not_fit_is_halved_until_one_does():
  tried = []

  def run(batch):
    tried.append(batch)
    if batch > 4:
      raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    return {"step_seconds": 1.0}
  assert device_check.largest_batch_that_fits(run, 16) == (4, {"step_seconds": 1.0})
  assert tried == [16, 8, 4]

  def broken(batch):
    raise tf.errors.InvalidArgumentError(None, None, f"not memory: {batch}")
  with pytest.raises(tf.errors.InvalidArgumentError):  # other errors are not retried
    device_check.largest_batch_that_fits(broken, 16)


@pytest.mark.slow
def test_device_check_script_times_the_three_models_at_toy_size(tmp_path):
  output = tmp_path / "results.json"
  toy = "--backbone=resnet_tiny,--encoder_filters=16,--cae_car_filters=16,--decoder_filters=16"
  result = subprocess.run(
      [os.path.join(ROOT, "benchmarks", "device_check.sh"), f"--experiment_flags={toy}",
       "--size=65", "--max_batch_size=2", "--steps=2", "--eval_batches=2", "--matmul_size=256",
       "--precision=none", "--noxla", "--replica_precisions=", f"--output_json={output}"],
      capture_output=True, text=True, timeout=1200, check=False,
      # XLA compiles slowly on a CPU, far beyond the script's 8-minute GPU budget on a busy one.
      env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3",
               DEVICE_CHECK_TIMEOUT="1100"))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert report["device"] == "CPU" and report["peak_tflops"] is None and not report["xla"]
  assert [os.path.basename(r["experiment"]).split("_")[0] for r in report["results"]] == [
      "sfpn", "hfgd-os4", "hfgd-os2"]
  for r in report["results"]:
    assert r["batch_size"] == 2 and r["step_seconds"] > 0 and r["eval_images_per_second"] > 0
    assert r["mfu"] is None and 0 < r["fraction_of_matmul"]
    assert r["achieved_tflops"] == pytest.approx(
        3 * r["forward_gflops_per_image"] * 2 / r["step_seconds"] / 1e3)
  flops = [r["forward_gflops_per_image"] for r in report["results"]]
  assert flops[0] < flops[1] < flops[2]  # SFPN < HFGD OS=4 < HFGD OS=2
  assert "Device check:" in result.stderr and "hfgd-os2" in result.stderr


@pytest.mark.slow  # a training subprocess: 201 s on 2 loaded cores (both precisions: 593 s)
def test_two_replica_check_trains_mirrored_with_finite_weights(tmp_path):
  """float16 only (the script's default runs bfloat16 first, by the same code): its dynamic loss
  scaling is the precision's multi-replica risk, and a second subprocess would double the time."""
  output = tmp_path / "results.json"
  result = subprocess.run(
      [os.path.join(ROOT, "benchmarks", "device_check.sh"), "--experiments=",
       "--matmul_size=64", "--replica_precisions=float16", "--replica_steps=3",
       "--replica_timeout=900",
       f"--replica_flags={','.join(device_check.REPLICA_FLAGS)},--crop_height=33,"
       "--crop_width=33,--batch_size=2,--eval_batch_size=2,"
       "--encoder_filters=8,--cae_car_filters=8,--decoder_filters=8,--builtin_num_train=4,"
       "--builtin_num_val=2,--log_every=1",
       f"--output_json={output}"],
      capture_output=True, text=True, timeout=1200, check=False,
      env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3",
               DEVICE_CHECK_TIMEOUT="1100"))
  assert result.returncode == 0, result.stderr[-3000:]
  checks = json.loads(output.read_text())["replica_checks"]
  assert [check["precision"] for check in checks] == ["float16"], checks
  for check in checks:
    assert "error" not in check, check
    assert (check["device"], check["strategy"], check["replicas"]) == (
        "CPU", "MirroredStrategy", 2)
    assert check["steps"] == 3 and check["non_finite_variables"] == []
    assert np.isfinite(check["first_loss"]) and np.isfinite(check["last_loss"])
    assert check["mean_iou"] is not None  # evaluated under the strategy at the last step
  assert "Two-replica checks:" in result.stderr and "float16: MirroredStrategy x2" in (
      result.stderr)
