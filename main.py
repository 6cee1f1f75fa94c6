"""hfgd-tf entry point: python main.py --flagfile=experiments/<dataset>/<experiment>.cfg --mode=...

Modes: train (then optionally evaluate, predict and export), eval, predict, export, benchmark and
flops. With no arguments at all it runs the built-in demo (experiments/builtin/demo.cfg): generate
the built-in dataset, train a small HFGD for a few minutes on a CPU, evaluate, write colourised
predictions and export a SavedModel.
"""

import json
import os
import sys

from hfgd_tf.quiet_import import import_tensorflow_quietly

import_tensorflow_quietly()

# pylint: disable=wrong-import-position
from absl import app, flags, logging

from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.flags import define_all_flags, run_config_from_flags

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
  from hfgd_tf.train import restore_model  # pylint: disable=import-outside-toplevel
  return restore_model(settings.model, settings.train.checkpoint_dir)


def run_eval(settings, model=None):
  _prepare_data(settings)
  model = _model(settings, model)
  results = _periodic_eval(settings).evaluate(model)
  path = os.path.join(settings.train.model_dir, "eval_results.json")
  os.makedirs(settings.train.model_dir, exist_ok=True)
  with open(path, "w", encoding="utf-8") as file:
    json.dump(results, file, indent=2)
  logging.info("Eval on %s/%s: mIoU %.4f, pixel accuracy %.4f (written to %s).",
               settings.train.dataset, settings.train.eval_split, results["miou"],
               results["pixel_accuracy"], path)
  return results


def run_predict(settings, model=None):
  del model
  raise SystemExit(f"error: --mode=predict is not available in this build yet ({settings.predict_input})")


def run_export(settings, model=None):
  del model
  raise SystemExit(f"error: --mode=export is not available in this build yet ({settings.export_dir})")


def run_benchmark(settings):
  from hfgd_tf.benchmark import run_benchmark as benchmark  # pylint: disable=import-outside-toplevel
  benchmark(settings, steps=FLAGS.benchmark_steps)


def run_flops(settings):
  from hfgd_tf.flops import format_complexity, model_complexity  # pylint: disable=import-outside-toplevel
  from hfgd_tf.model import build_model  # pylint: disable=import-outside-toplevel
  config = settings.model
  model = build_model(config)
  report = model_complexity(model, FLAGS.flops_height, FLAGS.flops_width)
  decoder = (config.decoder if config.decoder == "none"
             else f"{config.decoder} OS={config.decoder_output_stride}")
  title = (f"{config.backbone} (OS={config.backbone_output_stride}) / {config.encoder} / {decoder}"
           f" / HFGM={config.hfgm}: {FLAGS.flops_height}x{FLAGS.flops_width}x3, K={config.num_classes}")
  logging.info("\n%s", format_complexity(report, title))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    settings = run_config_from_flags(FLAGS, FLAGS.mode)
  except ValueError as error:
    sys.exit(f"error: {error}")
  runners = {"train": run_train, "eval": run_eval, "predict": run_predict, "export": run_export,
             "benchmark": run_benchmark, "flops": run_flops}
  runners[FLAGS.mode](settings)


def run():
  argv = sys.argv if len(sys.argv) > 1 else sys.argv + [f"--flagfile={DEMO_FLAGFILE}"]
  try:
    argv = expand_flagfiles(argv)
  except ValueError as error:
    sys.exit(f"error: {error}")
  app.run(main, argv=argv)


if __name__ == "__main__":
  run()
