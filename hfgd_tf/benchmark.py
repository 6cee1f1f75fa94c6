"""Speed and memory of the configured model against the SemanticFPN baseline (paper Table 5's
"SFPN": no encoder, SemanticFPN decoder, no HFGM), measured the same way in the same run.

Each model is measured in its own spawned process, so peak memory (host RSS from getrusage on CPU,
TensorFlow's peak GPU allocation on GPU) belongs to that model alone. Inputs are random tensors of
the training crop / eval size: this times the model, not the input pipeline.
"""

import dataclasses
import multiprocessing
import resource
import time

from absl import logging

from hfgd_tf.config import ModelConfig


def sfpn_baseline(config):
  """The SemanticFPN baseline of `config`: same backbone and width, no encoder, no HFGM."""
  return dataclasses.replace(config, encoder="identity", decoder="sfpn", decoder_output_stride=4,
                             hfgm=False, hfgm_axial_attention=False)


def _peak_memory_mb(tf):
  if tf.config.list_logical_devices("GPU"):
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20, "GPU peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host peak RSS"


def _timed(step, steps):
  step()  # Traces and warms up.
  step()
  start = time.perf_counter()
  for _ in range(steps):
    result = step()
  float(result)  # Waits for the device.
  return steps / (time.perf_counter() - start)


def measure(model_config, train_config, eval_size, eval_batch_size, steps):
  """{train_steps_per_s, images_per_s, peak_memory_mb, memory_kind, params} of one model."""
  # pylint: disable=import-outside-toplevel  (runs in a spawned process)
  import tensorflow as tf

  from hfgd_tf.modeling.losses import segmentation_losses
  from hfgd_tf.modeling.model import build_model
  from hfgd_tf.optimization import build_optimizer
  from hfgd_tf.train import set_precision

  model_config = ModelConfig.from_dict(model_config)
  set_precision(train_config.mixed_precision)
  model = build_model(model_config)
  optimizer = build_optimizer(train_config, model)
  batch, height, width = train_config.batch_size, train_config.augment.crop_height, train_config.augment.crop_width
  images = tf.random.uniform([batch, height, width, 3], -1.0, 1.0)
  labels = tf.random.uniform([batch, height, width], 0, model_config.num_classes, tf.int32)
  eval_images = tf.random.uniform([eval_batch_size, *eval_size, 3], -1.0, 1.0)

  @tf.function
  def train_step():
    with tf.GradientTape() as tape:
      outputs = model({"image": images, "label": labels}, training=True)
      loss, _ = segmentation_losses(outputs, labels, model_config)
      scaled = optimizer.scale_loss(loss)
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
    return loss

  @tf.function
  def infer_step():
    return tf.reduce_sum(model(eval_images, training=False))

  train_rate = _timed(train_step, steps)
  infer_rate = _timed(infer_step, steps) * eval_batch_size
  memory, kind = _peak_memory_mb(tf)
  params = int(sum(variable.numpy().size for variable in model.trainable_variables))
  return {"train_steps_per_s": train_rate, "images_per_s": infer_rate, "peak_memory_mb": memory,
          "memory_kind": kind, "params": params}


def run_benchmark(settings, steps=10):
  """Measures the configured model and its SFPN baseline; logs both and their ratios."""
  eval_size = (settings.eval.eval_height, settings.eval.eval_width)
  models = {"configured": settings.model, "sfpn baseline": sfpn_baseline(settings.model)}
  results = {}
  context = multiprocessing.get_context("spawn")
  for name, config in models.items():
    with context.Pool(1) as pool:
      results[name] = pool.apply(measure, (config.to_dict(), settings.train, eval_size,
                                           settings.eval.batch_size, steps))
  ours, base = results["configured"], results["sfpn baseline"]
  lines = [f"Benchmark: train batch {settings.train.batch_size} at {settings.train.augment.crop_height}x"
           f"{settings.train.augment.crop_width}, inference batch {settings.eval.batch_size} at "
           f"{eval_size[0]}x{eval_size[1]}, precision {settings.train.mixed_precision}, "
           f"{steps} timed steps",
           f"{'':16}{'train steps/s':>14}{'images/s':>12}{'peak MiB':>12}{'params (M)':>12}"]
  for name, result in results.items():
    lines.append(f"{name:16}{result['train_steps_per_s']:14.3f}{result['images_per_s']:12.2f}"
                 f"{result['peak_memory_mb']:12.0f}{result['params'] / 1e6:12.2f}")
  lines.append(f"{'ratio (ours/sfpn)':16}"
               f"{ours['train_steps_per_s'] / base['train_steps_per_s']:14.3f}"
               f"{ours['images_per_s'] / base['images_per_s']:12.3f}"
               f"{ours['peak_memory_mb'] / base['peak_memory_mb']:12.3f}"
               f"{ours['params'] / base['params']:12.3f}")
  lines.append(f"memory: {ours['memory_kind']}")
  logging.info("\n%s", "\n".join(lines))
  return results
