r"""Speed and memory of the configured model against its SemanticFPN baseline (paper Table 5's
"SFPN": no encoder, SemanticFPN decoder, no HFGM, same backbone), measured as a benchmark should be.

  python main.py --flagfile=<experiment>.cfg --mode=benchmark \
      [--benchmark_batch_size=2 --benchmark_rounds=7 --benchmark_steps=3]

On a shared machine absolute times swing 2x within minutes, so:
  * both models live in one process and are timed interleaved, A, B, A, B, ..., `rounds` rounds of
    `steps` steps each (training steps at the crop size, inference at the eval size, random inputs:
    this times the model, not the input pipeline); what is reported is the median and [min-max] of
    the per-round ratios A / B, next to the ratio of their forward multiply-adds (hfgd_tf/flops.py);
  * a dense matmul is timed in every round too, and each model's achieved inference rate
    (2 x MACs x images / s) is reported as a fraction of it (median over rounds);
  * peak memory alone needs one process per model (host peak RSS on CPU, TensorFlow's peak
    allocation on GPU), so each model also runs a few steps in its own spawned process.
Training steps are the trainer's own `replica_step` (losses, L2, optimizer, loss scaling), compiled
with XLA when --jit_compile resolves on. The batch is --benchmark_batch_size, not the recipe's
global batch (16 at 513^2 needs ~23 GB on a CPU).
"""

import dataclasses
import multiprocessing
import resource
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from hfgd_tf.config import ModelConfig
from hfgd_tf.distribution import use_jit_compile
from hfgd_tf.flops import model_complexity
from hfgd_tf.modeling.model import build_model
from hfgd_tf.optimization import build_optimizer, l2_variables
from hfgd_tf.precision import prepare_numerics
from hfgd_tf.training import replica_step

MATMUL_SIZE = 2048  # square matmul of the peak: large enough to saturate, small enough to be quick


def sfpn_baseline(config):
  """The SemanticFPN baseline of `config`: same backbone (undilated: SFPN reads its OS=4..32
  pyramid) and width, no encoder, no HFGM."""
  return dataclasses.replace(config, encoder="identity", decoder="sfpn", decoder_output_stride=4,
                             hfgm=False, hfgm_axial_attention=False, backbone_output_stride=32)


@dataclasses.dataclass
class Subject:
  """One model's compiled steps: `train()` and `infer()` each run one step and return a scalar."""
  name: str
  train: object
  infer: object
  infer_macs: int  # forward multiply-adds of one image at the eval size
  train_macs: int  # forward multiply-adds of one image at the crop size
  params: int


def random_batch(batch_size, height, width, num_classes):
  """Random images in [-1, 1] [batch, height, width, 3] and labels [batch, height, width]: a
  benchmark times the model, not the input pipeline."""
  images = tf.random.uniform([batch_size, height, width, 3], -1.0, 1.0)
  labels = tf.random.uniform([batch_size, height, width], 0, num_classes, tf.int32)
  return images, labels


def timed_steps(model, model_config, train_config, images, labels, eval_images, jit_compile):
  """(train, infer): the two compiled steps every benchmark times, each returning a scalar.
  `train` is the trainer's own `replica_step` (losses, L2, the recipe's optimizer, loss scaling)
  on `images`/`labels`; `infer` is the forward pass on `eval_images`."""
  optimizer = build_optimizer(train_config, model)
  l2 = l2_variables(model, train_config)

  def train():
    return replica_step(model, optimizer, model_config, images, labels, l2=l2,
                        weight_decay=train_config.weight_decay)[0]

  def infer():
    return tf.reduce_sum(model(eval_images, training=False))

  return (tf.function(train, jit_compile=jit_compile),
          tf.function(infer, jit_compile=jit_compile))


def build_subject(name, model_config, train_config, batch_size, eval_size, jit_compile):
  """Builds `model_config` with the recipe's optimizer and its train and inference steps."""
  model = build_model(model_config)
  crop = (train_config.augment.crop_height, train_config.augment.crop_width)
  images, labels = random_batch(batch_size, *crop, model_config.num_classes)
  eval_images, _ = random_batch(batch_size, *eval_size, model_config.num_classes)
  train, infer = timed_steps(model, model_config, train_config, images, labels, eval_images,
                             jit_compile)
  # Each distinct input size is traced and counted once (the crop is often the eval size).
  macs = {size: model_complexity(model, *size)["total"].multiply_adds
          for size in {tuple(eval_size), crop}}
  return Subject(
      name=name, train=train, infer=infer,
      infer_macs=macs[tuple(eval_size)], train_macs=macs[crop],
      params=int(sum(np.prod(variable.shape) for variable in model.trainable_variables)))


def matmul_peak(size=MATMUL_SIZE, jit_compile=False):
  """A step of one dense [size, size] x [size, size] matmul in the compute dtype; its FLOPs."""
  dtype = keras.mixed_precision.global_policy().compute_dtype
  a = tf.random.uniform([size, size], dtype=tf.float32)
  a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
  step = tf.function(lambda: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b), tf.float32)),
                     jit_compile=jit_compile)
  return step, 2 * size ** 3


def seconds_per_step(step, steps, warmup=0):
  """Mean seconds of `steps` calls of `step` after `warmup` untimed ones, waiting for the device
  at the end."""
  for _ in range(warmup):
    float(step())
  start = time.perf_counter()
  for _ in range(steps):
    result = step()
  float(result)
  return (time.perf_counter() - start) / steps


def summary(values):
  """(median, min, max)."""
  return float(np.median(values)), float(np.min(values)), float(np.max(values))


def interleaved_times(subjects, steps, rounds):
  """{"train"|"infer"|"matmul": {name: [seconds per step, one per round]}}, rounds interleaved.

  Every step is traced and run twice first, so compilation and warm-up stay out of the rounds.
  """
  matmul, _ = matmul_peak()
  calls = {"train": {s.name: s.train for s in subjects},
           "infer": {s.name: s.infer for s in subjects}, "matmul": {"matmul": matmul}}
  for step in (step for kind in calls.values() for step in kind.values()):
    seconds_per_step(step, 2)
  times = {kind: {name: [] for name in steps_of} for kind, steps_of in calls.items()}
  for _ in range(rounds):
    for kind, steps_of in calls.items():
      for name, step in steps_of.items():
        times[kind][name].append(seconds_per_step(step, steps))
  return times


def peak_memory(model_config, train_config, batch_size, eval_size, jit_compile):
  """(MiB, kind) after two train and two inference steps of one model; run in its own process."""
  model_config = ModelConfig.from_dict(model_config)
  train_config = prepare_numerics(train_config)  # a fresh process: the policy again
  subject = build_subject("memory", model_config, train_config, batch_size, eval_size,
                          jit_compile)
  for step in (subject.train, subject.train, subject.infer, subject.infer):
    float(step())
  if tf.config.list_logical_devices("GPU"):
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20, "GPU peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host peak RSS"


def run_benchmark(settings, steps=3, rounds=7, batch_size=2, memory=True):
  """Times the configured model and its SFPN baseline interleaved; logs and returns the report."""
  train_config = prepare_numerics(settings.train)
  eval_size = (settings.eval.eval_height, settings.eval.eval_width)
  crop = (train_config.augment.crop_height, train_config.augment.crop_width)
  jit_compile = use_jit_compile(train_config.jit_compile)
  configs = {"configured": settings.model, "sfpn": sfpn_baseline(settings.model)}
  subjects = [build_subject(name, config, train_config, batch_size, eval_size, jit_compile)
              for name, config in configs.items()]
  logging.info("Benchmark: batch %d (--benchmark_batch_size), train at %dx%d, inference at %dx%d, "
               "%s, XLA %s, %d rounds of %d steps, interleaved.", batch_size, *crop, *eval_size,
               train_config.mixed_precision, "on" if jit_compile else "off", rounds, steps)
  times = interleaved_times(subjects, steps, rounds)
  peak_flops = [MATMUL_SIZE ** 3 * 2 / seconds for seconds in times["matmul"]["matmul"]]
  ours, base = subjects
  report = {"batch_size": batch_size, "rounds": rounds, "steps": steps,
            "matmul_gflops": summary(np.array(peak_flops) / 1e9)}
  for kind, macs in (("train", "train_macs"), ("infer", "infer_macs")):
    ratios = np.array(times[kind][ours.name]) / np.array(times[kind][base.name])
    report[kind] = {"ratio": summary(ratios),
                    "macs_ratio": getattr(ours, macs) / getattr(base, macs),
                    "seconds": {s.name: summary(times[kind][s.name]) for s in subjects}}
  report["infer"]["peak_fraction"] = {
      s.name: summary(2 * s.infer_macs * batch_size / np.array(times["infer"][s.name])
                      / np.array(peak_flops)) for s in subjects}
  if memory:
    context = multiprocessing.get_context("spawn")
    report["memory"] = {}
    for name, config in configs.items():
      with context.Pool(1) as pool:
        report["memory"][name] = pool.apply(peak_memory, (
            config.to_dict(), train_config, batch_size, eval_size, jit_compile))
  logging.info("\n%s", format_report(report, subjects))
  return report


def format_report(report, subjects):
  """The report as a table: per-model times, then the ratios beside the FLOPs ratios."""
  def spread(values, fmt):
    return f"{values[0]:{fmt}} [{values[1]:{fmt}}-{values[2]:{fmt}}]"

  lines = [f"dense matmul peak {spread(report['matmul_gflops'], '.1f')} GFLOP/s (median "
           f"[min-max] over {report['rounds']} rounds)",
           f"{'':12}{'train s/step':>24}{'inference s/batch':>24}{'of matmul peak':>22}"
           f"{'GMACs/image':>13}{'params (M)':>12}"]
  for s in subjects:
    lines.append(f"{s.name:12}{spread(report['train']['seconds'][s.name], '.3f'):>24}"
                 f"{spread(report['infer']['seconds'][s.name], '.3f'):>24}"
                 f"{spread(report['infer']['peak_fraction'][s.name], '.2f'):>22}"
                 f"{s.infer_macs / 1e9:>13.2f}{s.params / 1e6:>12.2f}")
  ours, base = (s.name for s in subjects)
  for kind, label in (("train", "training"), ("infer", "inference")):
    lines.append(f"{label} {ours}/{base}: latency ratio {spread(report[kind]['ratio'], '.3f')}, "
                 f"forward MACs ratio {report[kind]['macs_ratio']:.3f}")
  if "memory" in report:
    (mine, kind), (theirs, _) = report["memory"][ours], report["memory"][base]
    lines.append(f"peak memory ({kind}, own process): {ours} {mine:.0f} MiB, {base} "
                 f"{theirs:.0f} MiB, ratio {mine / theirs:.3f}")
  return "\n".join(lines)
