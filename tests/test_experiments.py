"""Every experiment flagfile in every mode, as a user runs them, at toy size.

Each experiment under experiments/ runs in-process through main.py's path (flags on a fresh
FlagValues, flagfiles expanded, checked_settings_from_flags, runs.run) in a user's order: train
(`--flagfile=<experiment>` alone), then eval single-scale, eval with common/eval_mf.cfg, eval with
the sliding window where the dataset's recipe names one, predict, export, flops and benchmark, each
restoring the checkpoint training just wrote. Only sizes are overridden: a tiny backbone of the
same family, narrow heads, small crops and eval pads, two training steps, the cheapest benchmark
and a tiny copy of the dataset in its own format (one per dataset, shared by its experiments).

A run costs what tracing its model costs (~2 s per traced step of a tiny model on a 2-core CPU, and
each mode traces its own), so an experiment's eight modes take ~45 s and the whole matrix (36
experiments, 258 runs) ~27 min in one process. The default run keeps every experiment's flags
resolved in every mode (no TensorFlow work), HFGD OS=4 R50 on Pascal Context in every mode and the
Cityscapes sliding window (FAST_EXPERIMENTS); the rest is marked `matrix` (and slow). CI runs it on
two processes, each experiment's modes in one of them (its training is shared):
`python3 -m pytest -q -n 2 --dist loadgroup -m matrix tests` (249 runs, 20 min 37 s on 2 cores;
per mode, in seconds: benchmark 22, eval_mf 14, train 13, export 7, eval 5, predict 4, flops 3).
"""

import glob
import json
import logging
import os

import numpy as np
import pytest
from absl import flags

from hfgd_tf import runs
from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.flags import checked_settings_from_flags, define_all_flags
from tests import experiment_data, tiny_backbones

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")
EVAL_MF = os.path.join(EXPERIMENTS, "common", "eval_mf.cfg")
# Shared bases: recipes, protocols and dataset files that experiments include, never run alone.
BASES = ("ade20k/ade20k_150.cfg", "cityscapes/cityscapes.cfg", "coco_stuff/coco_stuff_164k.cfg",
         "common/eval_mf.cfg", "common/eval_ss.cfg", "common/train_adamw_sota.cfg",
         "common/train_sgd_ablation.cfg", "oxford_iiit_pet/oxford_iiit_pet.cfg",
         "pascal_context/pascal_context_59.cfg")
TINY_BACKBONES = {"resnet50": "resnet_test", "resnet_tiny": "resnet_test",
                  "convnext_large": "convnext_test", "convnext_v2_large": "convnext_v2_test",
                  "swin_large_384": "swin_test"}
# Every run's overrides: sizes, and the cheapest benchmark (its peak-memory processes are spawned
# and would not know the tests' tiny backbones).
OVERRIDES = ("--train_steps=2", "--batch_size=2", "--eval_batch_size=2", "--shuffle_buffer=4",
             "--encoder_filters=16", "--cae_car_filters=16", "--decoder_filters=16",
             "--builtin_num_train=4", "--builtin_num_val=2", "--flops_height=33",
             "--flops_width=33", "--benchmark_steps=1", "--benchmark_rounds=1",
             "--benchmark_batch_size=1", "--benchmark_memory=false", "--backbone_weights=none")
# Per dataset: image size of its tiny copy, crop, eval pad (all H, W) and the sliding window where
# its recipe names one (cityscapes.cfg: "--sliding_window=1025,1025 (or the crop)").
TINY_DATA = {"pascal_context": ((28, 32), (33, 33), (33, 33), None),
             "coco_stuff": ((32, 28), (33, 33), (33, 33), None),
             "ade20k": ((30, 33), (33, 33), (33, 33), None),
             "cityscapes": ((32, 64), (33, 65), (33, 65), (33, 33)),
             "tfds:oxford_iiit_pet": ((30, 26), (33, 33), (33, 33), None),
             "builtin": ((128, 128), (65, 65), (129, 129), None)}
MODES = ("train", "eval", "eval_mf", "eval_window", "predict", "export", "flops", "benchmark")
# What the default (not slow) run keeps: the paper's headline model in every mode, and the sliding
# window on the one dataset whose recipe uses it. CI runs the whole matrix.
FAST_EXPERIMENTS = {"pascal_context/hfgd-os4_r50_bs16-30k_pascal-context-59-513.cfg": "all",
                    "cityscapes/hfgd-os4_r50_bs16-30k_cityscapes-513x1025.cfg": "eval_window"}
PREDICT_IMAGE_SIZE = (40, 36)


def _experiments():
  paths = sorted(glob.glob(os.path.join(EXPERIMENTS, "**", "*.cfg"), recursive=True))
  return [name for name in (os.path.relpath(path, EXPERIMENTS) for path in paths)
          if name not in BASES]


def _flag_values(arguments):
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(expand_flagfiles(["main.py", *arguments]))
  return flag_values


def _settings(arguments):
  """What `python3 main.py ARGUMENTS` would run."""
  flag_values = _flag_values(arguments)
  return checked_settings_from_flags(flag_values, flag_values.mode)


def _model_arguments(experiment):
  """The experiment's flagfile with the size overrides, its backbone the same family's tiny one."""
  flagfile = f"--flagfile={os.path.join(EXPERIMENTS, experiment)}"
  recipe = checked_settings_from_flags(_flag_values([flagfile]), "flops")
  arguments = [flagfile, *OVERRIDES, f"--backbone={TINY_BACKBONES[recipe.model.backbone]}"]
  if recipe.train.warmup_steps >= 2:
    arguments.append("--warmup_steps=1")
  if recipe.train.pretrain_steps:
    arguments.append("--pretrain_steps=2")
  return arguments


def _matrix():
  """[(experiment, mode, fast)]: every applicable pair; `fast` for the FAST_EXPERIMENTS' pairs."""
  tiny_backbones.register()
  pairs = []
  for experiment in _experiments():
    settings = checked_settings_from_flags(_flag_values(_model_arguments(experiment)), "flops")
    windowed = TINY_DATA[settings.train.dataset][3] is not None
    for mode in MODES:
      if mode != "eval_window" or windowed:
        pairs.append((experiment, mode, FAST_EXPERIMENTS.get(experiment, ()) in ("all", mode)))
  return pairs


MATRIX = _matrix()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  """One tmp folder for the module's tiny datasets and runs, and what has trained in it."""
  return {"root": str(tmp_path_factory.mktemp("experiments")), "trained": {}}


def _data_arguments(dataset, root):
  """--data_dir (written on first use) and sizes of the dataset's tiny copy under `root`."""
  image, crop, pad, _ = TINY_DATA[dataset]
  data_dir = os.path.join(root, "data", dataset.replace(":", "_"))
  if dataset.startswith("tfds:"):
    if not os.path.isdir(data_dir):
      rng = np.random.default_rng(0)
      experiment_data.write_pet_shards(data_dir, {
          split: [[rng.integers(1, 4, image, dtype=np.uint8) for _ in range(count)]]
          for split, count in (("train", 4), ("test", 2))})
  elif dataset != "builtin":  # the run generates the built-in dataset, as the demo does
    raw_and_converted = data_dir
    data_dir = os.path.join(raw_and_converted, "converted")
    if not os.path.isdir(data_dir):
      experiment_data.converted_dataset(dataset, raw_and_converted, image)
  return [f"--data_dir={data_dir}", f"--crop_height={crop[0]}", f"--crop_width={crop[1]}",
          f"--eval_height={pad[0]}", f"--eval_width={pad[1]}"]


def _arguments(experiment, mode, workspace):
  """`python3 main.py` arguments of `mode` of the experiment, sizes overridden."""
  arguments = _model_arguments(experiment)
  dataset = checked_settings_from_flags(_flag_values(arguments), "flops").train.dataset
  arguments += _data_arguments(dataset, workspace["root"])
  arguments.append(f"--model_dir={os.path.join(workspace['root'], 'runs', experiment)}")
  if mode == "predict":
    images = os.path.join(workspace["root"], "predict", dataset.replace(":", "_"))
    if not os.path.isdir(images):
      experiment_data.image_folder(images, PREDICT_IMAGE_SIZE)
    arguments.append(f"--predict_input={images}")
  if mode == "eval_window":
    arguments += ["--mode=eval", "--sliding_window={},{}".format(*TINY_DATA[dataset][3])]
  elif mode == "eval_mf":
    arguments.append(f"--flagfile={EVAL_MF}")
  elif mode != "train":
    arguments.append(f"--mode={mode}")
  return arguments


def _trained(experiment, workspace):
  """Trains the experiment once (`python3 main.py --flagfile=<it>`); (settings, outcome)."""
  if experiment not in workspace["trained"]:
    settings = _settings(_arguments(experiment, "train", workspace))
    try:
      outcome = runs.run(settings)
    except Exception as error:  # pylint: disable=broad-except  (every later mode reports it)
      outcome = error
    workspace["trained"][experiment] = settings, outcome
  settings, outcome = workspace["trained"][experiment]
  if isinstance(outcome, Exception):
    raise AssertionError(f"training {experiment} failed: {outcome!r}") from outcome
  return settings, outcome


def _eval_results(settings):
  with open(os.path.join(settings.train.model_dir, "eval_results.json"), encoding="utf-8") as f:
    return json.load(f)


def test_every_experiment_and_no_base_is_in_the_matrix():
  experiments = _experiments()
  assert len(experiments) >= 35 and "builtin/demo.cfg" in experiments
  for base in BASES:
    assert os.path.isfile(os.path.join(EXPERIMENTS, base)), base
  assert {mode for _, mode, fast in MATRIX if fast} == set(MODES)


@pytest.mark.parametrize("experiment", _experiments())
def test_flags_resolve_in_every_mode(experiment, workspace):
  expected = {"train": "train", "eval_mf": "eval", "eval_window": "eval"}
  for mode in (mode for name, mode, _ in MATRIX if name == experiment):
    settings = _settings(_arguments(experiment, mode, workspace))
    assert settings.mode == expected.get(mode, mode), (
        f"{mode}: `python3 main.py --flagfile={experiment}` runs mode={settings.mode}")


def _params():
  return [pytest.param(experiment, mode, id=f"{experiment}-{mode}",
                       marks=(pytest.mark.xdist_group(experiment),
                              *(() if fast else (pytest.mark.slow, pytest.mark.matrix))))
          for experiment, mode, fast in MATRIX]


@pytest.mark.parametrize("experiment, mode", _params())
def test_mode(experiment, mode, workspace, caplog):
  settings, outcome = _trained(experiment, workspace)
  if mode == "train":
    assert outcome["step"] == 2
    assert glob.glob(os.path.join(settings.train.checkpoint_dir, "*.index"))
    assert 0 <= _eval_results(settings)["mean_iou"] <= 1  # eval_after_train
    return
  settings = _settings(_arguments(experiment, mode, workspace))
  caplog.set_level(logging.INFO, logger="absl")  # an export in this process raises its level
  result = runs.run(settings)
  if mode.startswith("eval"):
    written = _eval_results(settings)
    assert 0 <= result.mean_iou <= 1 and written["mean_iou"] == result.mean_iou
    multi_scale = mode == "eval_mf"
    assert written["scales"] == ([0.5, 0.75, 1.0, 1.25, 1.5, 1.75] if multi_scale else [1.0])
    assert written["flip"] == multi_scale
    assert written["sliding_window"] == (list(TINY_DATA[settings.train.dataset][3])
                                         if mode == "eval_window" else None)
  elif mode == "predict":
    assert len(result.processed) == 2 and not result.skipped
    assert len(os.listdir(settings.predict_output_dir)) >= 2
  elif mode == "export":
    assert os.path.isfile(os.path.join(result, "saved_model.pb"))
  elif mode == "flops":
    assert "GFLOPs (MACs)" in caplog.text and "total" in caplog.text
  else:
    assert "latency ratio" in caplog.text
