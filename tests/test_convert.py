"""Shard writer safety (resume, interruption) and the raw-layout converters' golden label maps."""

import os

import numpy as np
import pytest
import tensorflow as tf

from datasets import builtin, core, tfrecord
from hfgd_tf import input_pipeline as ip


def _shards(directory, split="train"):
  return sorted(tf.io.gfile.glob(os.path.join(directory, tfrecord.split_pattern(split))))


def _stats(paths):
  return {path: (os.stat(path).st_mtime_ns, os.stat(path).st_ino) for path in paths}


def _read_all(pattern):
  """Every example of the converted shards, keyed by filename: (image uint8, label int)."""
  examples = {}
  for batch in ip.eval_dataset(pattern, 1, 128, 128):
    height, width = batch["height"][0].numpy(), batch["width"][0].numpy()
    image = np.round((batch["image"][0].numpy()[:height, :width] + 1) * 255 / 2).astype(np.uint8)
    examples[batch["filename"][0].numpy().decode()] = (image, batch["label"][0].numpy()[
        :height, :width])
  return examples


def test_default_shard_counts():
  assert tfrecord.default_num_shards(3) == 1
  assert tfrecord.default_num_shards(200) == 6
  assert tfrecord.default_num_shards(4998) == 16
  assert tfrecord.default_num_shards(118287) == 116


def test_rerun_keeps_finished_shards_and_replaces_a_stale_incomplete_one(tmp_path):
  items = builtin.list_examples(0, "train", 12)
  tfrecord.write_split(builtin.INFO, "train", items, str(tmp_path), num_shards=4)
  shards = _shards(tmp_path)
  assert [os.path.basename(p) for p in shards] == [
      f"train-0000{k}-of-00004.tfrecord" for k in range(4)]
  with open(shards[2], "rb") as f:
    original = f.read()
  kept = _stats(shards[:2] + shards[3:])
  # An interrupted run: shard 2 never got renamed, a truncated temporary file is left behind.
  os.remove(shards[2])
  with open(shards[2] + tfrecord.INCOMPLETE_SUFFIX, "wb") as f:
    f.write(original[:100])
  assert len(_shards(tmp_path)) == 3  # the temporary file never looks finished
  tfrecord.write_split(builtin.INFO, "train", items, str(tmp_path), num_shards=4)
  assert _stats(shards[:2] + shards[3:]) == kept
  with open(shards[2], "rb") as f:
    assert f.read() == original
  assert not os.path.exists(shards[2] + tfrecord.INCOMPLETE_SUFFIX)


def test_a_failure_mid_shard_loses_nothing_written_and_leaves_no_half_shard(tmp_path, monkeypatch):
  items = builtin.list_examples(0, "train", 12)
  load = builtin.load_example

  def failing_load(item):
    if item[2] == 7:
      raise core.ConversionError("cannot read broken_file_7.png")
    return load(item)

  monkeypatch.setattr(builtin, "load_example", failing_load)
  with pytest.raises(core.ConversionError, match="broken_file_7.png"):
    tfrecord.write_split(builtin.INFO, "train", items, str(tmp_path), num_shards=4)
  # Shards 0 and 1 (items 0..5) were finished before the failure; shard 2 (items 6..8) failed.
  finished = _shards(tmp_path)
  assert [os.path.basename(p)[:11] for p in finished] == ["train-00000", "train-00001"]
  assert not [name for name in os.listdir(tmp_path) if name.endswith(tfrecord.INCOMPLETE_SUFFIX)]
  kept = _stats(finished)
  monkeypatch.setattr(builtin, "load_example", load)
  tfrecord.write_split(builtin.INFO, "train", items, str(tmp_path), num_shards=4)
  assert len(_shards(tmp_path)) == 4
  assert _stats(finished) == kept


def test_another_shard_count_in_the_same_directory_is_refused(tmp_path):
  items = builtin.list_examples(0, "train", 6)
  tfrecord.write_split(builtin.INFO, "train", items, str(tmp_path), num_shards=2)
  with pytest.raises(ValueError, match="another shard count"):
    tfrecord.write_split(builtin.INFO, "train", items, str(tmp_path), num_shards=3)


def test_parallel_workers_write_the_same_bytes_as_one_process(tmp_path):
  items = builtin.list_examples(3, "val", 8)
  tfrecord.write_split(builtin.INFO, "val", items, str(tmp_path / "one"), num_shards=2)
  tfrecord.write_split(builtin.INFO, "val", items, str(tmp_path / "two"), num_shards=2,
                       num_workers=2)
  for one, two in zip(_shards(tmp_path / "one", "val"), _shards(tmp_path / "two", "val")):
    with open(one, "rb") as f_one, open(two, "rb") as f_two:
      assert f_one.read() == f_two.read()


def test_records_round_trip_images_and_labels_losslessly(tmp_path):
  directory = builtin.ensure_builtin_dataset(str(tmp_path), seed=2, num_train=4, num_val=3)
  examples = _read_all(os.path.join(directory, "val-*.tfrecord"))
  assert sorted(examples) == ["val_00000", "val_00001", "val_00002"]
  for index in range(3):
    image, label = builtin.generate(2, "val", index)
    np.testing.assert_array_equal(examples[f"val_{index:05d}"][0], image)
    np.testing.assert_array_equal(examples[f"val_{index:05d}"][1], label)
  record = next(iter(tf.data.TFRecordDataset(_shards(directory, "val")[0])))
  keys = set(tf.train.Example.FromString(record.numpy()).features.feature)
  assert keys == {"image/encoded", "image/format", "image/height", "image/width", "image/channels",
                  "image/filename", "image/segmentation/class/encoded",
                  "image/segmentation/class/format"}
