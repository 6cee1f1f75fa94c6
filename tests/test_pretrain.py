"""Backbone pretraining on built-in shapes (hfgd_tf/pretrain.py, --mode=pretrain, --pretrain_steps):
the task, that it learns, the weights file and its reuse, and the flags around it."""

import json
import os

import numpy as np
import pytest
from absl import flags

from datasets import builtin
from hfgd_tf import pretrain, runs
from hfgd_tf.flags import checked_settings_from_flags, define_all_flags
from hfgd_tf.modeling.backbones import build_backbone
from hfgd_tf.modeling.backbones.weights import load_backbone_weights


def test_shape_examples_hold_one_object_named_by_its_class():
  images, shapes = pretrain.shape_examples(seed=1, count=12)
  assert images.shape == (12, builtin.IMAGE_SIZE, builtin.IMAGE_SIZE, 3)
  for index, shape in enumerate(shapes):
    _, label = builtin.generate(1, "train", index, num_objects=1)
    assert set(np.unique(label)) == {0, shape + 1}


@pytest.mark.slow  # > 15 s on 2 cores; CI runs it
def test_pretraining_learns_to_name_the_shapes_it_trains_on():
  # 12 images, 60 steps: a network that learns names most (0.76 measured); chance is 1/6.
  _, accuracy = pretrain.pretrain_backbone("resnet_test", steps=60, num_images=12, batch_size=12,
                                           learning_rate=5e-3, log_every=10)
  assert accuracy >= 0.5


def test_weights_are_written_reused_and_never_overwritten_by_other_settings(tmp_path,
                                                                           monkeypatch):
  path = pretrain.weights_path(str(tmp_path), "resnet_test")
  assert path == os.path.join(str(tmp_path), "pretrain", "resnet_test.weights.h5")
  calls = []

  def fake_pretrain(backbone_name, steps):
    calls.append(steps)
    return build_backbone(backbone_name, name="backbone"), 0.5

  monkeypatch.setattr(pretrain, "pretrain_backbone", fake_pretrain)
  assert pretrain.ensure_pretrained_backbone(path, "resnet_test", 3) == path
  with open(f"{path}.json") as f:
    assert json.load(f)["steps"] == 3
  written = os.path.getmtime(path)
  # The same settings: reused, not pretrained again.
  pretrain.ensure_pretrained_backbone(path, "resnet_test", 3)
  assert calls == [3]
  # Other settings: refused, the weights left as they were.
  with pytest.raises(ValueError, match="pretrained with .*'steps': 3"):
    pretrain.ensure_pretrained_backbone(path, "resnet_test", 4)
  assert calls == [3] and os.path.getmtime(path) == written
  assert not [name for name in os.listdir(os.path.dirname(path)) if "incomplete" in name]


@pytest.mark.slow  # > 15 s on 2 cores; CI runs it
def test_mode_pretrain_writes_weights_that_backbone_weights_loads(tmp_path):
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(["main.py", "--mode=pretrain", "--pretrain_steps=2", "--backbone=resnet_test",
               "--mixed_precision=none", f"--model_dir={tmp_path}"])
  result = runs.run(checked_settings_from_flags(flag_values, "pretrain"))
  assert result["backbone_weights"] == pretrain.weights_path(str(tmp_path), "resnet_test")
  assert os.path.isfile(result["backbone_weights"])
  with open(result["backbone_weights"] + ".json") as f:
    assert json.load(f) == {"version": pretrain.PRETRAIN_VERSION, "backbone": "resnet_test",
                            "steps": 2, "precision": "float32"}
  # --backbone_weights gives a fresh backbone exactly the weights pretraining saved.
  saved = build_backbone("resnet_test", name="backbone")
  saved.load_weights(result["backbone_weights"])
  fresh = build_backbone("resnet_test")
  load_backbone_weights(fresh, result["backbone_weights"])
  assert len(fresh.weights) == len(saved.weights)
  for expected, loaded in zip(saved.weights, fresh.weights):
    np.testing.assert_array_equal(expected.numpy(), loaded.numpy())
