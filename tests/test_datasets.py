"""Dataset registry and the built-in procedural dataset."""

import hashlib
import json
import os

import numpy as np
import pytest

import datasets
from datasets import builtin


def test_registry_lists_every_dataset_with_consistent_info():
  assert "builtin" in datasets.dataset_names()
  for name in datasets.dataset_names():
    info = datasets.get_dataset_info(name)
    assert info.name == name
    assert len(info.class_names) == len(info.palette) == info.num_classes
    assert info.ignore_label == 255
    assert all(len(colour) == 3 and all(0 <= c <= 255 for c in colour) for colour in info.palette)


def test_unknown_dataset_names_the_choices():
  with pytest.raises(ValueError, match="unknown dataset 'nope'.*builtin"):
    datasets.get_dataset_info("nope")


def test_builtin_examples_are_deterministic_and_seed_dependent():
  image_a, label_a = builtin.generate(0, "train", 3)
  image_b, label_b = builtin.generate(0, "train", 3)
  np.testing.assert_array_equal(image_a, image_b)
  np.testing.assert_array_equal(label_a, label_b)
  other_seed, _ = builtin.generate(1, "train", 3)
  other_split, _ = builtin.generate(0, "val", 3)
  assert not np.array_equal(image_a, other_seed)
  assert not np.array_equal(image_a, other_split)
  assert image_a.shape == (128, 128, 3) and image_a.dtype == np.uint8
  assert label_a.shape == (128, 128) and label_a.dtype == np.uint8


def test_builtin_has_every_class_and_colour_does_not_give_the_class_away():
  labels, colours = [], {}
  for index in range(40):
    image, label = builtin.generate(0, "train", index)
    labels.append(label)
    for class_id in np.unique(label):
      colours.setdefault(int(class_id), []).append(image[label == class_id].mean(axis=0))
  assert set(np.unique(np.stack(labels))) == set(range(builtin.INFO.num_classes))
  # Instances get random colours: each class spans a wide range of mean colours.
  for class_id, means in colours.items():
    assert np.ptp(np.stack(means), axis=0).max() > 100, class_id
  # Thin and small structures exist: dots and lines cover few pixels per image.
  fractions = np.mean([(label == 6).mean() for label in labels if (label == 6).any()])
  assert fractions < 0.02


def _digest(directory):
  digest = hashlib.sha256()
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name), "rb") as f:
      digest.update(name.encode() + f.read())
  return digest.hexdigest()


def test_ensure_builtin_dataset_is_byte_deterministic_and_idempotent(tmp_path):
  first = builtin.ensure_builtin_dataset(str(tmp_path / "a"), seed=5, num_train=20, num_val=4)
  second = builtin.ensure_builtin_dataset(str(tmp_path / "b"), seed=5, num_train=20, num_val=4)
  other = builtin.ensure_builtin_dataset(str(tmp_path / "c"), seed=6, num_train=20, num_val=4)
  assert _digest(first) == _digest(second)
  assert _digest(first) != _digest(other)
  mtimes = {name: os.stat(os.path.join(first, name)).st_mtime_ns for name in os.listdir(first)}
  assert builtin.ensure_builtin_dataset(first, seed=5, num_train=20, num_val=4) == first
  assert mtimes == {name: os.stat(os.path.join(first, name)).st_mtime_ns
                    for name in os.listdir(first)}
  with open(os.path.join(first, "dataset_info.json")) as f:
    info = json.load(f)
  assert info["splits"]["train"]["num_examples"] == 20
  assert info["splits"]["val"]["num_examples"] == 4
  assert info["class_names"] == list(builtin.CLASS_NAMES)
  with pytest.raises(ValueError, match="generated with"):
    builtin.ensure_builtin_dataset(first, seed=7, num_train=20, num_val=4)


def test_an_interrupted_builtin_dataset_resumes_only_with_the_same_settings(tmp_path):
  directory = builtin.ensure_builtin_dataset(str(tmp_path), seed=1, num_train=10, num_val=2)
  os.remove(os.path.join(directory, "dataset_info.json"))  # as if interrupted before the end
  with pytest.raises(ValueError, match="generated with"):
    builtin.ensure_builtin_dataset(directory, seed=2, num_train=10, num_val=2)
  builtin.ensure_builtin_dataset(directory, seed=1, num_train=10, num_val=2)
  assert os.path.exists(os.path.join(directory, "dataset_info.json"))


def test_builtin_objects_keep_apart_so_no_shape_is_cut_by_another():
  for index in range(20):
    _, label = builtin.generate(0, "val", index)
    present = [c for c in range(1, builtin.INFO.num_classes) if (label == c).any()]
    for a in present:
      grown = builtin._dilate(label == a, 2)  # pylint: disable=protected-access
      for b in present:
        assert b == a or not (grown & (label == b)).any(), (index, a, b)


def test_a_copy_from_an_older_generator_is_not_reused(tmp_path):
  directory = builtin.ensure_builtin_dataset(str(tmp_path), seed=0, num_train=2, num_val=1)
  info_path = tmp_path / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["generator"]["version"] = builtin.GENERATOR_VERSION - 1
  info_path.write_text(json.dumps(info))
  older = builtin.GENERATOR_VERSION - 1
  with pytest.raises(ValueError, match=f"generated with .*'version': {older}.*delete it"):
    builtin.ensure_builtin_dataset(directory, seed=0, num_train=2, num_val=1)
