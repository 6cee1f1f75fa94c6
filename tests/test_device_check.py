"""benchmarks/device_check.sh at toy size on the CPU: every experiment timed, with its batch,
achieved rate, share of the measured matmul rate and eval images/s; a batch that runs out of
device memory is halved until one fits."""

import json
import os
import subprocess

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
       "--precision=none", "--noxla", f"--output_json={output}"],
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
