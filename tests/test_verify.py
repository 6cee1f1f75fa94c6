"""Unreadable records are named (shard and index) wherever the pipeline meets them, and
`python -m tools.verify_dataset` (alias `datasets.verify`) finds every bad shard, record and label
before a run."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from datasets import builtin, core, dataset_info, records, tfrecord
from hfgd_tf.config import AugmentConfig
from hfgd_tf.data import pipeline, sources, unreadable
from tests.test_real_data import truncate_in_record, write_ids_shard
from tools import verify_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(name="folder")
def _folder(tmp_path):
  """A converted built-in copy: 2 train shards of 4 records, 2 val shards of 2."""
  tfrecord.write_dataset(builtin.INFO, builtin.load_example,
                         {"train": builtin.work_items(0, "train", 8),
                          "val": builtin.work_items(0, "val", 4)},
                         str(tmp_path), num_shards=2)
  return str(tmp_path)


def _shard(folder, split, index):
  pattern = os.path.join(folder, records.finished_shard_pattern(split))
  return sorted(tf.io.gfile.glob(pattern))[index]


def test_a_healthy_folder_has_no_problem(folder):
  assert not verify_dataset.verify(folder)


def test_verify_names_a_truncated_shard_and_the_record(folder):
  shard = _shard(folder, "train", 1)
  truncate_in_record(shard, 2)
  problems = verify_dataset.verify(folder)
  assert problems[0].startswith(f"unreadable record 2 of {shard}: truncated record at")
  assert problems[1] == "train: 6 records read, dataset_info.json lists 8"


def test_verify_names_labels_that_are_neither_class_nor_ignore_and_size_mismatches(folder):
  image, label = builtin.generate(0, "val", 0)
  label = label.copy()
  label[:2, :3] = 9  # built-in has 7 classes
  bad_label = core.EncodedExample("bad", core.encode_png(image), "png", label)
  small = core.EncodedExample("small", core.encode_png(image[:64]), "png", label * 0)
  shard = _shard(folder, "val", 0)
  with tf.io.TFRecordWriter(shard) as writer:  # replaces the shard: same name, 2 records
    writer.write(tfrecord.serialize_example(bad_label))
    writer.write(tfrecord.serialize_example(small))
  assert verify_dataset.verify(folder, splits=["val"]) == [
      f"record 0 of {shard}: 6 label values such as 9 are neither a class (< 7) nor ignore",
      f"record 1 of {shard}: image 64x128 but label 128x128"]


def test_a_record_that_reads_but_does_not_decode_is_found_by_the_decoding_pass(folder):
  image, label = builtin.generate(0, "val", 0)
  broken = core.EncodedExample("broken", b"not an image", "png", label)
  shard = _shard(folder, "val", 1)
  with tf.io.TFRecordWriter(shard) as writer:
    writer.write(tfrecord.serialize_example(core.EncodedExample("fine", core.encode_png(image),
                                                                "png", label)))
    writer.write(tfrecord.serialize_example(broken))
  located = unreadable.locate_unreadable_record([os.path.join(folder, "val-*.tfrecord")])
  assert str(located) == (f"unreadable record 1 of {shard}: Unknown image file format. One of "
                          "JPEG, JPEG XL, PNG, GIF, BMP, WebP required.")
  assert verify_dataset.verify(folder, splits=["val"]) == [
      str(located), "val: 3 records read, dataset_info.json lists 4"]


def test_verify_checks_ids_records_with_their_ignore_mapping(tmp_path):
  label = np.zeros((6, 8), np.int64)
  label[0, 0] = 59  # iDS Pascal Context: 0 ignore, 1..59 classes
  write_ids_shard(tmp_path / "val-0.tfrecord", [label])
  with pytest.raises(dataset_info.DataDirError, match="no dataset_info.json; pass --dataset"):
    verify_dataset.verify(str(tmp_path), splits=["val"])
  assert not verify_dataset.verify(str(tmp_path), "pascal_context", splits=["val"])
  label[1, 1] = 60
  write_ids_shard(tmp_path / "val-0.tfrecord", [label])
  assert "1 label values such as 59 are neither a class (< 59)" in verify_dataset.verify(
      str(tmp_path), "pascal_context", splits=["val"])[0]


def test_a_training_step_names_the_unreadable_shard_and_record(folder):
  shard = _shard(folder, "train", 0)
  truncate_in_record(shard, 3)
  pattern = os.path.join(folder, "train-*.tfrecord")
  iterator = iter(pipeline.train_dataset(pattern, 2, AugmentConfig(crop_height=33, crop_width=33),
                                   seed=0, shuffle_buffer=2))

  @tf.function
  def step(iterator):
    images, _ = next(iterator)
    return tf.reduce_sum(images)

  with pytest.raises(sources.UnreadableRecordError) as error:
    with unreadable.naming_unreadable_records([pattern]):
      for _ in range(8):
        step(iterator)
  assert str(error.value).startswith(f"unreadable record 3 of {shard}: truncated record at")
  # An eval loop (eager iteration) too; and a shard cut in its first record fails when opened.
  truncate_in_record(_shard(folder, "val", 0), 0)
  with pytest.raises(sources.UnreadableRecordError, match=r"unreadable record 0 of .*val-00000"):
    pipeline.eval_dataset(os.path.join(folder, "val-*.tfrecord"), 1, 128, 128)


def test_errors_not_from_the_input_pipeline_pass_unchanged(folder):
  with pytest.raises(tf.errors.InvalidArgumentError, match="not the data"):
    with unreadable.naming_unreadable_records([os.path.join(folder, "train-*.tfrecord")]):
      tf.debugging.Assert(False, ["not the data"])


def test_verify_cli_reports_each_problem_and_fails(folder):
  shard = _shard(folder, "train", 0)
  truncate_in_record(shard, 1)
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run([sys.executable, "-m", "datasets.verify", f"--data_dir={folder}"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
                          check=False)
  assert result.returncode == 1
  assert f"unreadable record 1 of {shard}: truncated record at" in result.stderr
  assert result.stderr.strip().splitlines()[-1] == f"2 problem(s) in {folder}"
  assert "val: [##############################] 4/4 records" in result.stderr
  assert "Traceback" not in result.stderr
