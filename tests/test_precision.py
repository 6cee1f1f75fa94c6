"""One precision path: --mixed_precision=auto resolves for the machine, and every mode sets the
resolved policy (and the seeds) through hfgd_tf/precision.py before it builds a model."""

import dataclasses
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from hfgd_tf import precision, runs
from hfgd_tf.config import TrainConfig
from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.flags import checked_settings_from_flags, define_all_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_FLAGFILE = os.path.join(
    ROOT, "experiments", "pascal_context", "hfgd-os4_r50_bs16-30k_pascal-context-59-513.cfg")


def _fake_gpus(monkeypatch, devices, capability):
  devices = [tf.config.PhysicalDevice(f"/physical_device:{kind}:{index}", kind)
             for index, kind in enumerate(devices)]
  monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: devices)
  monkeypatch.setattr(tf.config.experimental, "get_device_details",
                      lambda device: {"compute_capability": capability})


@pytest.mark.parametrize("devices, capability, expected", [
    ([], None, "none"), (["GPU"], (7, 0), "float16"), (["GPU"], (8, 0), "bfloat16"),
    (["GPU"], (9, 0), "bfloat16")])
def test_auto_precision_fits_the_device(monkeypatch, devices, capability, expected):
  _fake_gpus(monkeypatch, devices, capability)
  strategy = tf.distribute.get_strategy()
  assert precision.resolve_mixed_precision("auto", strategy) == expected
  assert precision.resolve_mixed_precision("float16", strategy) == "float16"


@pytest.mark.parametrize("mixed_precision, capability, policy", [
    ("auto", (7, 5), "mixed_float16"), ("auto", (8, 0), "mixed_bfloat16"),
    ("none", (8, 0), "float32"), ("float16", (8, 0), "mixed_float16")])
def test_prepare_numerics_sets_the_resolved_policy_and_returns_the_resolved_config(
    monkeypatch, mixed_precision, capability, policy):
  _fake_gpus(monkeypatch, ["GPU"], capability)
  train = precision.prepare_numerics(TrainConfig(mixed_precision=mixed_precision, seed=5))
  assert keras.mixed_precision.global_policy().name == policy
  assert precision.POLICIES[train.mixed_precision] == policy  # the optimizer reads it (scaling)


def test_prepare_numerics_seeds_from_the_config():
  precision.prepare_numerics(TrainConfig(seed=5))
  first = np.random.rand(3), keras.random.uniform([3], seed=None).numpy()
  precision.prepare_numerics(TrainConfig(seed=5))
  second = np.random.rand(3), keras.random.uniform([3], seed=None).numpy()
  precision.prepare_numerics(TrainConfig(seed=6))
  assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
  assert not np.array_equal(first[0], np.random.rand(3))


class _Built(Exception):
  """Raised where a mode would build or restore its model, carrying the policy in force."""


def _record_policy(*args, **kwargs):
  raise _Built(keras.mixed_precision.global_policy().name)


def _paper_settings(mode):
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(expand_flagfiles(["main.py", f"--flagfile={PAPER_FLAGFILE}", "--mode=flops"]))
  settings = checked_settings_from_flags(flag_values, "flops")  # needs no data folder
  assert settings.train.mixed_precision == "auto"  # the recipe's
  return dataclasses.replace(settings, mode=mode, predict_input="unused/*.png")


@pytest.mark.parametrize("mode, builder", [
    ("eval", "hfgd_tf.checkpoints.restore_model"),
    ("predict", "hfgd_tf.checkpoints.restore_model"),
    ("export", "hfgd_tf.checkpoints.restore_model"),
    ("benchmark", "hfgd_tf.benchmark.build_subject"),
    ("pretrain", "hfgd_tf.pretrain.ensure_pretrained_backbone"),
    ("flops", "hfgd_tf.modeling.model.build_model")])
def test_every_mode_builds_a_paper_recipe_in_the_resolved_policy(monkeypatch, mode, builder):
  # On a GPU of compute capability 8.0 the recipes' auto means bfloat16 in every mode, so a model
  # trained in bfloat16 is evaluated, exported and timed in it (not a KeyError: 'auto'). Training
  # goes through the Trainer's own prepare_numerics (test_prepare_numerics_*, tests/test_train.py).
  _fake_gpus(monkeypatch, ["GPU"], (8, 0))
  monkeypatch.setattr(builder, _record_policy)
  with pytest.raises(_Built, match="^mixed_bfloat16$"):
    runs.run(_paper_settings(mode))


@pytest.mark.parametrize("mode", ["eval", "predict", "export"])
def test_eval_predict_export_of_a_tpu_run_compute_in_its_bfloat16(monkeypatch, mode):
  # No GPU here; the run trained with --distribution=tpu, where auto is bfloat16. eval gets its
  # strategy from create_strategy (standing in: this machine has no TPU), predict and export none.
  _fake_gpus(monkeypatch, [], (0, 0))
  monkeypatch.setattr("hfgd_tf.distribution.create_strategy",
                      lambda *args, **kwargs: tf.distribute.get_strategy())
  monkeypatch.setattr("hfgd_tf.checkpoints.restore_model", _record_policy)
  settings = _paper_settings(mode)
  settings = dataclasses.replace(settings, train=dataclasses.replace(
      settings.train, distribution="tpu", tpu="local"))
  with pytest.raises(_Built, match="^mixed_bfloat16$"):
    runs.run(settings)


def test_nothing_else_sets_the_global_policy():
  callers = []
  for folder, _, names in os.walk(ROOT):
    if os.path.relpath(folder, ROOT).split(os.sep)[0] in ("tests", ".git", "runs"):
      continue
    for name in names:
      path = os.path.join(folder, name)
      if name.endswith(".py") and path != precision.__file__:
        with open(path, encoding="utf-8") as source:
          if re.search(r"set_global_policy\(", source.read()):
            callers.append(os.path.relpath(path, ROOT))
  assert not callers


def test_float32_policy_holds_within_the_block_and_restores_the_runs_after():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    with precision.float32_policy():
      assert keras.mixed_precision.global_policy().name == "float32"
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
  finally:
    keras.mixed_precision.set_global_policy("float32")
