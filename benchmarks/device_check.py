r"""First look at an accelerator: per model, the XLA training step time at the largest batch (up
to 16) that fits, its model FLOPs utilisation (MFU), peak memory and eval images/s.

  benchmarks/device_check.sh            # SFPN, HFGD OS=4, HFGD OS=2: ResNet-50, 513x513, bf16
  python -m benchmarks.device_check --experiments=A.cfg,B.cfg --size=513 --output_json=r.json

Each experiment's own flagfile gives the model and the optimizer recipe (hfgd_tf/flags/), so
what is timed is what a run of it trains. The steps are --mode=benchmark's own
(hfgd_tf/benchmark.py `timed_steps`: the trainer's training step, and the forward pass for eval);
inputs are random (this times the model, not the input pipeline); every step is compiled and run
twice before it is timed. A batch that does not fit is halved until one does.

First, in a process of its own per precision (bfloat16, then float16), the multi-replica path:
the device (the first GPU, else the CPU) is split into two logical devices, and the demo's small
model trains a few steps through hfgd_tf/runs.py on the built-in data with --distribution=auto (two
logical GPUs: MirroredStrategy; on a CPU, --distribution=mirrored over two logical CPUs) and
--jit_compile=auto, evaluating under the strategy; every weight of its checkpoint must be finite.
So one lent GPU checks what an 8-GPU box runs.

MFU = 3 x forward FLOPs x batch / step time / peak: the forward FLOPs come from the model's graph
(hfgd_tf/flops.py), the backward pass counted as twice the forward (the usual convention). Peaks
are the vendor's dense bfloat16 tensor-core figures for known GPUs (PEAK_TFLOPS; --peak_tflops
overrides), and a measured large matmul's rate is reported beside it (the only peak on a CPU).
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from hfgd_tf import flags as hfgd_flags
from hfgd_tf import runs
from hfgd_tf.benchmark import matmul_peak, random_batch, seconds_per_step, timed_steps
from hfgd_tf.config import TrainConfig
from hfgd_tf.distribution import create_strategy, use_jit_compile
from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.flops import model_complexity
from hfgd_tf.modeling.model import build_model
from hfgd_tf.precision import prepare_numerics

EXPERIMENTS = [f"experiments/pascal_context/{name}_r50_bs16-30k_pascal-context-59-513.cfg"
               for name in ("sfpn", "hfgd-os4", "hfgd-os2")]

# Dense bfloat16 tensor TFLOP/s (no sparsity) from the vendors' data sheets, by the device name
# TensorFlow reports; the first key contained in the name wins, so specific names come first.
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0,
               "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
               "RTX 4090": 165.0, "RTX A6000": 155.0, "V100": 125.0, "T4": 65.0}

flags.DEFINE_list("experiments", EXPERIMENTS, "Experiment flagfiles to time, in order.")
flags.DEFINE_list("experiment_flags", [], "Flags added to every experiment's (e.g. a toy size).")
flags.DEFINE_integer("size", 513, "Square crop (training) and eval size.")
flags.DEFINE_integer("max_batch_size", 16, "Largest batch tried; halved until it fits.")
flags.DEFINE_integer("steps", 10, "Timed training steps per model.")
flags.DEFINE_integer("eval_batches", 10, "Timed eval batches per model.")
flags.DEFINE_enum("precision", "bfloat16", ["bfloat16", "float16", "none"], "Compute dtype.")
flags.DEFINE_bool("xla", True, "Compile the steps with XLA.")
flags.DEFINE_integer("matmul_size", 4096, "Side of the square matmul whose rate is measured.")
flags.DEFINE_float("peak_tflops", None, "The device's peak TFLOP/s; default from PEAK_TFLOPS.")
flags.DEFINE_string("output_json", None, "Also write the results here.")

# The two-replica check's run: the demo's model at a toy size (what is checked is the
# multi-replica path, not speed), random backbone weights, no pretraining.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "experiments", "builtin", "demo.cfg")
REPLICA_FLAGS = ["--builtin_num_train=32", "--builtin_num_val=8", "--crop_height=65",
                 "--crop_width=65", "--batch_size=8",
                 "--eval_batch_size=8", "--log_every=5", "--checkpoint_every=1000",
                 "--image_summary_every=1000", "--backbone_weights=none"]
flags.DEFINE_list("replica_precisions", ["bfloat16", "float16"],
                  "Precisions of the two-replica check, one process each; empty: skip it.")
flags.DEFINE_list("replica_flags", REPLICA_FLAGS, "Flags of the two-replica check's run (after "
                  "experiments/builtin/demo.cfg's).")
flags.DEFINE_integer("replica_steps", 20, "Training steps of the two-replica check.")
flags.DEFINE_integer("replica_memory_mb", 4096, "GPU memory of each of the two logical GPUs.")
flags.DEFINE_integer("replica_timeout", 120, "Seconds each two-replica check may take.")
flags.DEFINE_string("replica_check", None, "Internal: run the two-replica check in this process "
                    "in this precision, writing its results to --output_json.")

FLAGS = flags.FLAGS


def experiment_settings(flagfile, extra_flags=()):
  """RunSettings of `flagfile` (+ `extra_flags`) as main.py would resolve them; random backbone
  weights (timing needs no pretrained values, and device machines may have no internet)."""
  values = flags.FlagValues()
  hfgd_flags.define_all_flags(values)
  values(expand_flagfiles(["device_check", f"--flagfile={flagfile}", "--backbone_weights=none",
                           *extra_flags]))
  return hfgd_flags.checked_settings_from_flags(values, mode="benchmark")


def device_peak():
  """(name, peak FLOP/s or None) of the first GPU, or of the CPU."""
  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    return "CPU", None
  name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
  tflops = FLAGS.peak_tflops or next(
      (peak for key, peak in PEAK_TFLOPS.items() if key in name), None)
  return name, tflops * 1e12 if tflops else None


def measured_matmul_flops(size, steps=10):
  """FLOP/s of a [size, size] x [size, size] matmul in the compute dtype."""
  matmul, flops = matmul_peak(size, jit_compile=FLAGS.xla)
  return flops / seconds_per_step(matmul, steps, warmup=2)


def _reset_memory():
  if tf.config.list_logical_devices("GPU"):
    tf.config.experimental.reset_memory_stats("GPU:0")


def _peak_memory_gib():
  if not tf.config.list_logical_devices("GPU"):
    return None
  return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 30


def _out_of_memory(error):
  return isinstance(error, tf.errors.ResourceExhaustedError) or "RESOURCE_EXHAUSTED" in str(error)


def largest_batch_that_fits(run, max_batch_size):
  """(batch, run(batch)) for the first batch from `max_batch_size` down, halving, at which
  `run` does not run out of device memory."""
  batch_size = max_batch_size
  while True:
    try:
      return batch_size, run(batch_size)
    except (tf.errors.OpError, RuntimeError) as error:
      if not _out_of_memory(error) or batch_size == 1:
        raise
      logging.info("Batch %d does not fit; trying %d.", batch_size, batch_size // 2)
      batch_size //= 2


def time_model(settings, batch_size, size):
  """Training s/step, peak memory and eval images/s of one model at `batch_size`."""
  model = build_model(settings.model)
  images, labels = random_batch(batch_size, size, size, settings.model.num_classes)
  train_step, eval_step = timed_steps(model, settings.model, settings.train, images, labels,
                                      images, FLAGS.xla)
  _reset_memory()
  step_seconds = seconds_per_step(train_step, FLAGS.steps, warmup=2)
  eval_seconds = seconds_per_step(eval_step, FLAGS.eval_batches, warmup=2)
  return dict(step_seconds=step_seconds, peak_memory_gib=_peak_memory_gib(),
              eval_images_per_second=batch_size / eval_seconds)


def check_experiment(flagfile, peak_flops, matmul_flops):
  """Times one experiment at the largest batch that fits; returns its results."""
  logging.info("%s: counting FLOPs, then timing from batch %d.", flagfile, FLAGS.max_batch_size)
  settings = experiment_settings(flagfile, FLAGS.experiment_flags)
  settings = dataclasses.replace(settings, model=dataclasses.replace(
      settings.model, sync_batch_norm=False))
  forward_flops = model_complexity(build_model(settings.model), FLAGS.size, FLAGS.size)[
      "total"].flops
  batch_size, timing = largest_batch_that_fits(
      lambda batch: time_model(settings, batch, FLAGS.size), FLAGS.max_batch_size)
  achieved = 3 * forward_flops * batch_size / timing["step_seconds"]
  return dict(experiment=flagfile, batch_size=batch_size, forward_gflops_per_image=(
      forward_flops / 1e9), achieved_tflops=achieved / 1e12,
      mfu=achieved / peak_flops if peak_flops else None,
      fraction_of_matmul=achieved / matmul_flops, **timing)


def format_results(device, peak_flops, matmul_flops, results):
  """The results as a table, one experiment per row."""
  peak = f"{peak_flops / 1e12:.0f} TFLOP/s" if peak_flops else "unknown"
  lines = [f"{device}: {FLAGS.precision}, XLA {'on' if FLAGS.xla else 'off'}, {FLAGS.size}x"
           f"{FLAGS.size}; peak {peak}, measured matmul {matmul_flops / 1e12:.2f} TFLOP/s",
           f"{'experiment':60}{'batch':>6}{'s/step':>9}{'TFLOP/s':>9}{'MFU':>7}{'of matmul':>11}"
           f"{'peak GiB':>10}{'eval img/s':>12}"]
  for r in results:
    mfu = f"{r['mfu']:.3f}" if r["mfu"] is not None else "-"
    memory = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "-"
    lines.append(f"{r['experiment'][-60:]:60}{r['batch_size']:>6}{r['step_seconds']:>9.3f}"
                 f"{r['achieved_tflops']:>9.2f}{mfu:>7}{r['fraction_of_matmul']:>11.3f}"
                 f"{memory:>10}{r['eval_images_per_second']:>12.1f}")
  return "\n".join(lines)


def split_in_two_logical_devices():
  """Splits the first GPU (else the CPU) into two logical devices, before TensorFlow starts
  them; returns the device kind and the --distribution that spreads a run over both."""
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    tf.config.set_logical_device_configuration(gpus[0], [
        tf.config.LogicalDeviceConfiguration(memory_limit=FLAGS.replica_memory_mb)] * 2)
    return "GPU", "auto"  # two GPUs: auto's MirroredStrategy
  cpus = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
  return "CPU", "mirrored"  # auto keeps one device on CPUs


def non_finite_variables(checkpoint_dir):
  """Names of the float variables of the latest checkpoint that hold an inf or NaN."""
  reader = tf.train.load_checkpoint(checkpoint_dir)
  return sorted(name for name, dtype in reader.get_variable_to_dtype_map().items()
                if dtype.is_floating and not np.all(np.isfinite(reader.get_tensor(name))))


def replica_check(precision):
  """Trains the demo's model on two logical devices in `precision` (this process only: one
  MirroredStrategy per process); returns what it ran and whether the weights stayed finite."""
  kind, distribution = split_in_two_logical_devices()
  folder = tempfile.mkdtemp(prefix="device_check_replicas_")
  values = flags.FlagValues()
  hfgd_flags.define_all_flags(values)
  values(expand_flagfiles([
      "device_check", f"--flagfile={DEMO}", *FLAGS.replica_flags, "--pretrain_steps=0",
      "--warmup_steps=0",
      f"--mixed_precision={precision}", f"--distribution={distribution}", "--jit_compile=auto",
      f"--train_steps={FLAGS.replica_steps}", f"--eval_every={FLAGS.replica_steps}",
      "--eval_after_train=false", "--predict_after_train=false", "--export_after_train=false",
      f"--data_dir={folder}/data", f"--model_dir={folder}/run"]))
  settings = hfgd_flags.checked_settings_from_flags(values, mode="train")
  strategy = create_strategy(settings.train.distribution)
  start = time.perf_counter()
  results = runs.run_train(settings, strategy=strategy)
  seconds = time.perf_counter() - start
  return dict(precision=precision, device=kind, strategy=type(strategy).__name__,
              replicas=strategy.num_replicas_in_sync,
              xla=use_jit_compile(settings.train.jit_compile, strategy), steps=results["step"],
              first_loss=results["first_loss"], last_loss=results["last_loss"],
              mean_iou=float(results["miou"]) if "miou" in results else None,
              seconds=seconds,
              non_finite_variables=non_finite_variables(settings.train.checkpoint_dir))


def replica_checks():
  """replica_check in each --replica_precisions, each in a subprocess; a check that fails or
  runs out of time is reported with the end of its log instead of ending the device check."""
  checks = []
  for precision in FLAGS.replica_precisions:
    with tempfile.TemporaryDirectory() as folder:
      output = os.path.join(folder, "replicas.json")
      command = [sys.executable, "-m", "benchmarks.device_check", f"--replica_check={precision}",
                 f"--output_json={output}", f"--replica_steps={FLAGS.replica_steps}",
                 f"--replica_memory_mb={FLAGS.replica_memory_mb}",
                 f"--replica_flags={','.join(FLAGS.replica_flags)}"]
      try:
        result = subprocess.run(command, capture_output=True, text=True, check=False,
                                timeout=FLAGS.replica_timeout, cwd=ROOT)
        log, failed = result.stderr, result.returncode != 0
      except subprocess.TimeoutExpired as error:
        log = (error.stderr or b"").decode(errors="replace") if isinstance(
            error.stderr, bytes) else (error.stderr or "")
        failed, log = True, log + f"\n(timed out after {FLAGS.replica_timeout} s)"
      if failed or not os.path.exists(output):
        checks.append(dict(precision=precision, error=log.strip().splitlines()[-20:]))
      else:
        with open(output, encoding="utf-8") as file:
          checks.append(json.load(file))
    logging.info("Two-replica check: %s", json.dumps(checks[-1]))
  return checks


def format_replica_checks(checks):
  """The two-replica checks as lines: what ran, and OK or what went wrong."""
  lines = []
  for check in checks:
    if "error" in check:
      lines.append(f"{check['precision']}: FAILED: {check['error'][-1] if check['error'] else ''}")
      continue
    verdict = ("OK" if not check["non_finite_variables"] and np.isfinite(check["last_loss"])
               else f"NON-FINITE: {check['non_finite_variables'][:3]}")
    lines.append(f"{check['precision']}: {check['strategy']} x{check['replicas']} on "
                 f"{check['device']}, XLA {'on' if check['xla'] else 'off'}, {check['steps']} "
                 f"steps in {check['seconds']:.1f} s, loss {check['first_loss']:.3f} -> "
                 f"{check['last_loss']:.3f}: {verdict}")
  return "\n".join(lines)


def _write_json(report):
  if FLAGS.output_json:
    with tf.io.gfile.GFile(FLAGS.output_json, "w") as file:
      json.dump(report, file, indent=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.replica_check:
    _write_json(replica_check(FLAGS.replica_check))
    return
  # Before this process touches a GPU, which would hold its memory.
  replicas = replica_checks()
  if replicas:
    logging.info("Two-replica checks:\n%s", format_replica_checks(replicas))
    _write_json(dict(replica_checks=replicas))  # kept if the timing below runs out of time
  prepare_numerics(TrainConfig(mixed_precision=FLAGS.precision))
  device, peak_flops = device_peak()
  matmul_flops = measured_matmul_flops(FLAGS.matmul_size)
  results = []
  for flagfile in FLAGS.experiments:
    results.append(check_experiment(flagfile, peak_flops, matmul_flops))
    logging.info("%s", json.dumps(results[-1]))
    _write_json(dict(replica_checks=replicas, results=results))  # so far, if time runs out
  logging.info("Device check:\n%s", format_results(device, peak_flops, matmul_flops, results))
  if replicas:
    logging.info("Two-replica checks:\n%s", format_replica_checks(replicas))
  _write_json(dict(device=device, precision=FLAGS.precision, xla=FLAGS.xla, size=FLAGS.size,
                   peak_tflops=peak_flops / 1e12 if peak_flops else None,
                   matmul_tflops=matmul_flops / 1e12, results=results, replica_checks=replicas))


if __name__ == "__main__":
  app.run(main)
