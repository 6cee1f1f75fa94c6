r"""HFGD against its SemanticFPN baseline on the built-in dataset: the paper's claim in miniature.

  python3 -m benchmarks.hfgd_vs_sfpn                    # default budget: 21 min on 2 idle cores
  python3 -m benchmarks.hfgd_vs_sfpn --pretrain_steps=0  # every backbone from scratch
  python3 -m benchmarks.hfgd_vs_sfpn --quick            # toy size, seconds per run (the test)

Like the demo (experiments/builtin/demo.cfg), the backbone is first pretrained on built-in shape
classification (hfgd_tf/pretrain.py, --pretrain_steps as the demo's), once: every model and seed
starts from the same weights, as the paper's models start from ImageNet. Then it trains three
models with the demo's recipe (backbone, widths, optimizer, augmentation), the same number of
steps and the same seeds:
  sfpn      the paper's baseline layout: backbone -> SemanticFPN (1x1 laterals) -> classifier,
            trained end to end (no encoder, no HFGM);
  hfgd_os4  backbone -> CAE -> U-SFPN OS=4 -> HFGM (stop-gradients, axial attention, class kernels);
  hfgd_os2  the same with U-SFPN's OS=2 block.
Each is evaluated (single scale, the val split) every --eval_every steps. The table gives the mean
+- std over seeds of the final mIoU, of the solid (disc, square, triangle) and thin/small (ring,
line, dot) classes' mean IoU, and of each class' IoU; `results.json` keeps every number and
`learning_curves.png` plots val mIoU against step (seed mean, one line per model).
"""

import dataclasses
import os
import time

import numpy as np
from absl import app, flags, logging
from PIL import Image, ImageDraw

from hfgd_tf.quiet_import import import_tensorflow_quietly

tf = import_tensorflow_quietly()

# pylint: disable=wrong-import-position  (after the quiet TensorFlow import)
import keras

from datasets import builtin, records
from hfgd_tf import evaluation, runs, visualize
from hfgd_tf import training
from hfgd_tf.atomic_files import write_json
from hfgd_tf.data import pipeline
from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.flags import checked_settings_from_flags, define_all_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_FLAGFILE = os.path.join(ROOT, "experiments", "builtin", "demo.cfg")
# Model flags of each contender, on top of the demo's.
MODELS = {
    "sfpn": dict(encoder="identity", decoder="sfpn", hfgm=False, hfgm_axial_attention=False),
    "hfgd_os4": dict(encoder="cae", decoder="usfpn", decoder_output_stride=4, hfgm=True,
                     hfgm_axial_attention=True),
    "hfgd_os2": dict(encoder="cae", decoder="usfpn", decoder_output_stride=2, hfgm=True,
                     hfgm_axial_attention=True),
}
# Demo flags the comparison changes: learning curves need evaluations early in the run, which
# a momentum of 0.99 would spoil (hfgd_tf/bn_statistics.py), and only the final checkpoint is kept.
_RECIPE = ("--bn_momentum=0.9", "--checkpoint_every=1000000", "--image_summary_every=1000000",
           "--log_every=100")
# --quick: the same comparison at toy size.
_QUICK = ("--backbone=resnet_tiny", "--encoder_filters=16", "--cae_car_filters=16",
          "--decoder_filters=16", "--crop_height=33", "--crop_width=33", "--batch_size=2",
          "--log_every=2", "--warmup_steps=1")
COLOURS = {"sfpn": (31, 119, 180), "hfgd_os4": (214, 39, 40), "hfgd_os2": (44, 160, 44)}

FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags; defined only when run as a script, so importing this module (the tests)
  leaves absl's global flags alone."""
  flags.DEFINE_integer("steps", 500, "Training steps of every run.")
  flags.DEFINE_integer("seeds", 3, "Seeds per model (runs use seeds 0..seeds-1).")
  flags.DEFINE_integer("eval_every", 100, "Steps between evaluations; divides steps.")
  flags.DEFINE_list("models", list(MODELS), f"Models to compare, among {list(MODELS)}.")
  flags.DEFINE_string("output_dir", os.path.join("runs", "hfgd_vs_sfpn"),
                      "Runs, results.json and learning_curves.png go here (a local folder, "
                      "gs://...).")
  flags.DEFINE_string("data_dir", os.path.join("runs", "builtin-data"),
                      "The built-in dataset (generated when missing).")
  flags.DEFINE_integer(
      "pretrain_steps", None, "Backbone pretraining steps (hfgd_tf/pretrain.py), shared by every "
      "run; 0: from scratch. Default: the demo's (0 with --quick).")
  flags.DEFINE_string(
      "backbone_weights", None, "Backbone weights every model starts from instead of "
      "pretraining (e.g. from `python3 main.py --mode=pretrain`).")
  flags.DEFINE_bool(
      "quick", False, "Toy size (resnet_tiny, 33x33 crops, 16 images; --steps/--eval_every/--seeds "
      "default to 4/2/2): checks the chain, measures nothing.")


@dataclasses.dataclass
class RunResult:
  model: str
  seed: int
  steps: list  # evaluation steps
  miou: list  # val mIoU at those steps
  class_iou: list  # final per-class IoU
  seconds: float  # training wall time


class _Recorder:
  """The Trainer's validation: full evaluation every eval_every steps, results kept in order."""

  def __init__(self, dataset, num_classes):
    self.dataset, self.num_classes = dataset, num_classes
    self.results = []

  def evaluate(self, model):
    self.results.append(evaluation.evaluate(model, self.dataset, self.num_classes, log_every=0))
    return {"miou": self.results[-1].mean_iou}


def demo_settings(*overrides):
  """RunSettings of the demo flagfile with `overrides` (flag strings) on top."""
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(expand_flagfiles(["hfgd_vs_sfpn", f"--flagfile={DEMO_FLAGFILE}", *overrides]))
  return checked_settings_from_flags(flag_values, "train")


def train_and_evaluate(settings, model_name, seed, run_dir):
  """One run; returns its RunResult (evaluations at every settings.train.eval_every steps)."""
  keras.backend.clear_session()
  model_config = dataclasses.replace(settings.model, **MODELS[model_name])
  train_config = dataclasses.replace(
      settings.train, seed=seed, checkpoint_dir=os.path.join(run_dir, "checkpoints"),
      tensorboard_dir=os.path.join(run_dir, "tensorboard"))
  eval_data = pipeline.eval_dataset(
      records.split_files(train_config.data_dir, train_config.eval_split),
      settings.eval.batch_size, settings.eval.eval_height, settings.eval.eval_width)
  recorder = _Recorder(eval_data, model_config.num_classes)
  trainer = training.Trainer(model_config, train_config,
                             tf.distribute.OneDeviceStrategy("/cpu:0"), validation=recorder)
  start = time.time()
  trainer.train()
  seconds = time.time() - start
  every = train_config.eval_every
  return RunResult(model_name, seed, [every * (i + 1) for i in range(len(recorder.results))],
                   [float(result.mean_iou) for result in recorder.results],
                   [float(iou) for iou in recorder.results[-1].iou], seconds)


def _mean_std(values):
  """Over seeds; a class absent from the val split (toy sizes) has NaN IoU and is skipped."""
  return f"{np.nanmean(values):.3f} +- {np.nanstd(values):.3f}"


def summary_table(results, class_names, thin_classes):
  """Text table: per model, mean +- std over seeds of mIoU, solid / thin mean IoU and each class."""
  thin = [class_names.index(name) for name in thin_classes]
  solid = [index for index in range(1, len(class_names)) if index not in thin]
  header = ["model", "seeds", "mIoU", "solid", "thin", *class_names, "s/run"]
  rows = [header]
  for model in dict.fromkeys(result.model for result in results):
    runs = [result for result in results if result.model == model]
    ious = np.array([run.class_iou for run in runs])  # [seeds, K]
    rows.append([model, str(len(runs)), _mean_std([run.miou[-1] for run in runs]),
                 _mean_std(np.nanmean(ious[:, solid], 1)), _mean_std(np.nanmean(ious[:, thin], 1)),
                 *[_mean_std(ious[:, k]) for k in range(len(class_names))],
                 f"{np.mean([run.seconds for run in runs]):.0f}"])
  widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
  return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths))
                   for row in rows)


def learning_curve_image(results, width=640, height=400, margin=48):
  """uint8 RGB [height, width, 3]: val mIoU (0..1) against step, the seed mean of each model."""
  canvas = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(canvas)
  last_step = max(max(result.steps) for result in results)
  left, top, right, bottom = margin, margin // 2, width - margin // 2, height - margin

  def point(step, miou):
    return (left + (right - left) * step / last_step, bottom - (bottom - top) * miou)

  for tick in np.linspace(0, 1, 6):  # horizontal grid, mIoU 0, 0.2, ..., 1
    draw.line([point(0, tick), point(last_step, tick)], fill=(220, 220, 220))
    draw.text((4, point(0, tick)[1] - 6), f"{tick:.1f}", fill="black")
  draw.rectangle([left, top, right, bottom], outline="black")
  draw.text((left, bottom + 6), "0", fill="black")
  draw.text((right - 40, bottom + 6), f"{last_step} steps", fill="black")
  draw.text((left + 4, top + 4), "val mIoU (mean over seeds)", fill="black")
  for row, model in enumerate(dict.fromkeys(result.model for result in results)):
    runs = [result for result in results if result.model == model]
    steps, curves = runs[0].steps, np.mean([run.miou for run in runs], axis=0)
    colour = COLOURS.get(model, (0, 0, 0))
    points = [point(step, miou) for step, miou in zip(steps, curves)]
    draw.line(points, fill=colour, width=2)
    for x, y in points:  # the measured points
      draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    draw.text((right - 120, bottom - 20 - 14 * row), model, fill=colour)
  return np.asarray(canvas)


def run_comparison(settings, model_names, seeds, output_dir):
  """Every model x seed; returns the RunResults in that order."""
  results = []
  for model_name in model_names:
    for seed in range(seeds):
      logging.info("Training %s, seed %d (%d steps).", model_name, seed,
                   settings.train.train_steps)
      result = train_and_evaluate(settings, model_name, seed,
                                  os.path.join(output_dir, f"{model_name}-seed{seed}"))
      logging.info("%s seed %d: mIoU %.4f after %.0f s.", model_name, seed, result.miou[-1],
                   result.seconds)
      results.append(result)
  return results


def write_results(output_dir, results, **summary):
  """`summary` and every run's RunResult as results.json, the curves as learning_curves.png, in
  `output_dir` (any TF filesystem: a local folder, gs://...); returns the picture's path."""
  write_json(os.path.join(output_dir, "results.json"),
             dict(summary, runs=[dataclasses.asdict(result) for result in results]), indent=1)
  curve_path = os.path.join(output_dir, "learning_curves.png")
  visualize.write_png(curve_path, learning_curve_image(results))
  return curve_path


def main(argv):
  del argv
  quick = FLAGS.quick
  steps = FLAGS.steps if FLAGS["steps"].present or not quick else 4
  eval_every = FLAGS.eval_every if FLAGS["eval_every"].present or not quick else 2
  seeds = FLAGS.seeds if FLAGS["seeds"].present or not quick else 2
  unknown = set(FLAGS.models) - set(MODELS)
  if unknown:
    raise app.UsageError(f"--models: unknown {sorted(unknown)}; choose among {list(MODELS)}")
  if steps % eval_every:
    raise app.UsageError(f"--eval_every={eval_every} must divide --steps={steps}")
  num_train, num_val = (16, 4) if quick else (1000, 200)
  builtin.ensure_builtin_dataset(FLAGS.data_dir, num_train=num_train, num_val=num_val)
  overrides = [*_RECIPE, *(_QUICK if quick else ()), f"--train_steps={steps}",
               f"--eval_every={eval_every}", f"--data_dir={FLAGS.data_dir}",
               f"--model_dir={FLAGS.output_dir}"]
  pretrain_steps = FLAGS.pretrain_steps
  if pretrain_steps is None:
    pretrain_steps = 0 if quick else demo_settings().train.pretrain_steps
  backbone_weights = FLAGS.backbone_weights
  if backbone_weights and pretrain_steps and FLAGS["pretrain_steps"].present:
    raise app.UsageError("--backbone_weights and --pretrain_steps both give the backbone's "
                         "weights; set one of the two")
  if not backbone_weights and pretrain_steps:
    # Once for every run: the same pretrained weights, as --mode=pretrain writes them.
    backbone_weights = runs.run_pretrain(
        demo_settings(*overrides, f"--pretrain_steps={pretrain_steps}"))["backbone_weights"]
  overrides.append("--pretrain_steps=0")
  if backbone_weights:
    overrides.append(f"--backbone_weights={backbone_weights}")
  settings = demo_settings(*overrides)
  results = run_comparison(settings, FLAGS.models, seeds, FLAGS.output_dir)

  class_names = list(settings.dataset_info.class_names)
  table = summary_table(results, class_names, builtin.THIN_CLASSES)
  curve_path = write_results(FLAGS.output_dir, results, steps=steps, eval_every=eval_every,
                             seeds=seeds, backbone_weights=backbone_weights,
                             class_names=class_names)
  print(f"{steps} steps per run, {seeds} seeds, val mIoU (mean +- std over seeds):\n{table}\n"
        f"Learning curves: {curve_path}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
