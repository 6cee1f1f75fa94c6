"""hfgd-tf entry point: python main.py --flagfile=experiments/<dataset>/<experiment>.cfg --mode=...

Modes: train (then optionally evaluate, predict and export), eval, predict, export, benchmark and
flops. With no arguments at all it runs the built-in demo (experiments/builtin/demo.cfg): generate
the built-in dataset, train a small HFGD for a few minutes on a CPU, evaluate, write colourised
predictions and export a SavedModel.
"""

import os
import sys

from hfgd_tf.quiet_import import import_tensorflow_quietly

import_tensorflow_quietly()

# pylint: disable=wrong-import-position
from absl import app, flags, logging

from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.flags import define_all_flags, run_config_from_flags
from hfgd_tf.run_config import FlagError

ROOT = os.path.dirname(os.path.abspath(__file__))
DEMO_FLAGFILE = os.path.join(ROOT, "experiments", "builtin", "demo.cfg")

define_all_flags()
FLAGS = flags.FLAGS


def _prepare_data(settings):
  if settings.train.dataset == "builtin":
    from datasets.builtin import ensure_builtin_dataset  # pylint: disable=import-outside-toplevel
    logging.info("Built-in dataset in %s (generated if missing).", settings.train.data_dir)
    ensure_builtin_dataset(settings.train.data_dir, seed=0, num_train=FLAGS.builtin_num_train,
                           num_val=FLAGS.builtin_num_val)


def _eval_pattern(settings):
  return os.path.join(settings.train.data_dir, f"{settings.train.eval_split}-*.tfrecord")


def _periodic_eval(settings):
  from hfgd_tf.train import PeriodicEval  # pylint: disable=import-outside-toplevel
  return PeriodicEval(_eval_pattern(settings), settings.model.num_classes,
                      settings.eval.eval_height, settings.eval.eval_width,
                      settings.eval.batch_size, settings.eval.max_examples)


def run_train(settings):
  from hfgd_tf import train  # pylint: disable=import-outside-toplevel
  from hfgd_tf.distribution import create_strategy  # pylint: disable=import-outside-toplevel
  _prepare_data(settings)
  train.set_seeds(settings.train.seed, settings.train.deterministic)
  strategy = create_strategy(settings.train.distribution, settings.train.tpu)
  validation = _periodic_eval(settings)
  trainer = train.Trainer(settings.model, settings.train, strategy,
                          palette=settings.dataset_info.palette, validation=validation)
  results = trainer.train()
  logging.info("Training done at step %d; checkpoints in %s, TensorBoard logs in %s.",
               results["step"], settings.train.checkpoint_dir, settings.train.tensorboard_dir)
  if settings.train.eval_after_train:
    run_eval(settings, model=trainer.model)
  if FLAGS.predict_after_train:
    run_predict(settings, model=trainer.model)
  if FLAGS.export_after_train:
    run_export(settings, model=trainer.model)


def _model(settings, model):
  if model is not None:
    return model
  from hfgd_tf.train import restore_model, set_precision  # pylint: disable=import-outside-toplevel
  set_precision(settings.train.mixed_precision)  # compute as in training, e.g. the bf16 demo
  return restore_model(settings.model, settings.train.checkpoint_dir)


def _protocol(settings):
  return dict(scales=settings.eval.scales, flip=settings.eval.flip,
              window=settings.eval.sliding_window)


def run_eval(settings, model=None):
  """mIoU with the configured protocol; per-class table on the console, JSON in model_dir."""
  # pylint: disable=import-outside-toplevel
  from hfgd_tf import evaluation, input_pipeline
  from hfgd_tf.distribution import create_strategy
  _prepare_data(settings)
  strategy = None
  if model is None:
    strategy = create_strategy(settings.train.distribution, settings.train.tpu)
    with strategy.scope():
      model = _model(settings, None)
  dataset = input_pipeline.eval_dataset(
      _eval_pattern(settings), settings.eval.batch_size, settings.eval.eval_height,
      settings.eval.eval_width, ignore_label=settings.model.ignore_label)
  if settings.eval.max_examples:
    dataset = dataset.unbatch().take(settings.eval.max_examples).batch(settings.eval.batch_size)
  results = evaluation.evaluate(model, dataset, settings.model.num_classes,
                                strategy=strategy, ignore_label=settings.model.ignore_label,
                                **_protocol(settings))
  class_names = settings.dataset_info.class_names
  path = os.path.join(settings.train.model_dir, "eval_results.json")
  evaluation.write_results_json(results, class_names, path, extra=dict(
      dataset=settings.train.dataset, split=settings.train.eval_split,
      scales=list(settings.eval.scales), flip=settings.eval.flip,
      sliding_window=settings.eval.sliding_window))
  logging.info("Eval on %s/%s:\n%s\nResults written to %s.", settings.train.dataset,
               settings.train.eval_split, evaluation.format_results(results, class_names), path)
  return results


def _demo_inputs(settings, count=8):
  """Writes the first `count` eval images as PNGs (the built-in dataset has no image files)."""
  # pylint: disable=import-outside-toplevel
  import numpy as np

  from hfgd_tf import input_pipeline, visualize
  folder = os.path.join(settings.train.model_dir, "predict_inputs")
  dataset = input_pipeline.eval_dataset(_eval_pattern(settings), 1, settings.eval.eval_height,
                                        settings.eval.eval_width).take(count)
  for index, batch in enumerate(dataset):
    height, width = int(batch["height"][0]), int(batch["width"][0])
    image = (batch["image"][0, :height, :width].numpy() + 1.0) * 127.5
    visualize.write_png(os.path.join(folder, f"{index:03d}.png"),
                        np.clip(np.round(image), 0, 255).astype(np.uint8))
  return folder


def _demo_comparison(settings, model, count=4):
  """Writes <model_dir>/demo.png: input | ground truth | prediction for the first eval images."""
  # pylint: disable=import-outside-toplevel
  import numpy as np
  import tensorflow as tf

  from hfgd_tf import input_pipeline, visualize
  batch = next(iter(input_pipeline.eval_dataset(_eval_pattern(settings), count,
                                                settings.eval.eval_height,
                                                settings.eval.eval_width)))
  # The largest image's extent; smaller ones show their padding (ignore: black).
  height, width = int(max(batch["height"])), int(max(batch["width"]))
  predictions = tf.argmax(model(batch["image"], training=False), -1)
  images = np.clip(np.round((batch["image"].numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8)
  path = os.path.join(settings.train.model_dir, "demo.png")
  visualize.write_png(path, visualize.comparison_grid(
      images[:, :height, :width], batch["label"].numpy()[:, :height, :width],
      predictions.numpy()[:, :height, :width], settings.dataset_info.palette))
  logging.info("Input | ground truth | prediction of %d eval images written to %s.",
               len(images), path)


def run_predict(settings, model=None):
  """Colourised masks and overlays for a folder or glob of images (train: the eval split's, and
  an input | ground truth | prediction picture of the first ones)."""
  from hfgd_tf.predict import predict_images  # pylint: disable=import-outside-toplevel
  model = _model(settings, model)
  if not settings.predict_input:
    _demo_comparison(settings, model)
  inputs = settings.predict_input or _demo_inputs(settings)
  summary = predict_images(model, inputs, settings.predict_output_dir,
                           settings.dataset_info.palette, **_protocol(settings))
  logging.info("Predictions of %d images written to %s%s.", len(summary.processed),
               settings.predict_output_dir,
               f" ({len(summary.skipped)} unreadable skipped)" if summary.skipped else "")
  return summary


def run_export(settings, model=None):
  """A SavedModel taking uint8 images of any size, with the configured inference protocol."""
  from hfgd_tf.export import export_saved_model  # pylint: disable=import-outside-toplevel
  path = export_saved_model(_model(settings, model), settings.export_dir,
                            overwrite=FLAGS.export_overwrite,
                            class_names=settings.dataset_info.class_names,
                            palette=settings.dataset_info.palette, **_protocol(settings))
  logging.info("SavedModel exported to %s.", path)
  return path


def run_benchmark(settings):
  from hfgd_tf import benchmark  # pylint: disable=import-outside-toplevel
  benchmark.run_benchmark(settings, steps=FLAGS.benchmark_steps)


def run_flops(settings):
  # pylint: disable=import-outside-toplevel
  from hfgd_tf.flops import format_backbone_complexity, format_complexity, model_complexity
  from hfgd_tf.model import build_model
  if FLAGS.flops_backbones:
    logging.info("\n%s", format_backbone_complexity(FLAGS.flops_backbones, FLAGS.flops_height))
    return
  config = settings.model
  model = build_model(config)
  report = model_complexity(model, FLAGS.flops_height, FLAGS.flops_width)
  decoder = (config.decoder if config.decoder == "none"
             else f"{config.decoder} OS={config.decoder_output_stride}")
  title = (f"{config.backbone} (OS={config.backbone_output_stride}) / {config.encoder} / {decoder}"
           f" / HFGM={config.hfgm}: {FLAGS.flops_height}x{FLAGS.flops_width}x3, "
           f"K={config.num_classes}")
  logging.info("\n%s", format_complexity(report, title))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  runners = {"train": run_train, "eval": run_eval, "predict": run_predict, "export": run_export,
             "benchmark": run_benchmark, "flops": run_flops}
  try:
    runners[FLAGS.mode](run_config_from_flags(FLAGS, FLAGS.mode))
  except FlagError as error:
    sys.exit(f"error: {error}")


def run():
  argv = sys.argv if len(sys.argv) > 1 else sys.argv + [f"--flagfile={DEMO_FLAGFILE}"]
  try:
    argv = expand_flagfiles(argv)
  except ValueError as error:
    sys.exit(f"error: {error}")
  app.run(main, argv=argv)


if __name__ == "__main__":
  run()
