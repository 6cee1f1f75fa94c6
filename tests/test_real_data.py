"""A user's first runs on real data, through main.py: the authors' iDS Pascal Context records (0 =
ignore) are trained and scored with label 0 ignored; a truncated shard ends training or evaluation
in one line naming it, with the checkpoints written before intact."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--backbone=resnet_tiny", "--encoder_filters=16", "--cae_car_filters=16",
        "--decoder_filters=16", "--crop_height=33", "--crop_width=33", "--eval_height=33",
        "--eval_width=33", "--min_scale=1", "--max_scale=1", "--batch_size=2",
        "--eval_batch_size=2", "--log_every=1", "--shuffle_buffer=4"]


def main_py(*arguments):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *arguments],
                        capture_output=True, text=True, env=env, timeout=600, check=False)


def ids_record(image, label):
  """One record in the authors' iDS layout: serialized float32 image and int32 [H, W, 1] label."""
  def bytes_feature(tensor):
    value = tf.io.serialize_tensor(tensor).numpy()
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  features = {"image": bytes_feature(tf.constant(image, tf.float32)),
              "label": bytes_feature(tf.constant(label[..., None], tf.int32))}
  for key, value in (("height", label.shape[0]), ("width", label.shape[1]), ("depth", 3)):
    features[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_ids_shard(path, labels, seed=0):
  """An iDS shard (ZLIB, as iDS wrote Pascal Context) of random images with the given labels."""
  rng = np.random.default_rng(seed)
  with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type="ZLIB")) as writer:
    for label in labels:
      image = rng.integers(0, 256, label.shape + (3,)).astype(np.float32)
      writer.write(ids_record(image, np.asarray(label)))


def truncate_in_record(path, index):
  """Cuts a TFRecord file in the middle of record `index` (records are length, crc, data, crc)."""
  with open(path, "rb") as f:
    data = f.read()
  offset = 0
  for _ in range(index):
    offset += 16 + int.from_bytes(data[offset:offset + 8], "little")
  with open(path, "wb") as f:
    f.write(data[:offset + 40])


@pytest.mark.slow
def test_ids_pascal_context_label_0_never_reaches_the_loss_or_the_metric(tmp_path):
  data = tmp_path / "ids"
  data.mkdir()
  # Training labels are all iDS "ignore" (0): with 0 mapped to 255, both CE terms are exactly 0.
  write_ids_shard(data / "train-0.tfrecord", [np.zeros((24, 30), np.int64)] * 4)
  val = np.zeros((24, 30), np.int64)
  val[:5, :7] = 1  # class 0 (aeroplane)
  val[10:12, :] = 5  # class 4 (bench)
  val[20, 3] = 59  # class 58 (wood)
  write_ids_shard(data / "val-0.tfrecord", [val, val[::-1]], seed=1)
  run = tmp_path / "run"
  result = main_py("--dataset=pascal_context", f"--data_dir={data}", f"--model_dir={run}",
                   "--train_steps=1", "--optimizer=adamw", "--learning_rate=1e-3", *TINY)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "(ce 0.0000 cae_ce 0.0000" in result.stderr
  matrix = np.array(json.loads((run / "eval_results.json").read_text())["confusion_matrix"])
  rows = matrix.sum(axis=1)
  assert rows.sum() == 2 * np.count_nonzero(val)
  assert (rows[0], rows[4], rows[58]) == (2 * 35, 2 * 60, 2)


@pytest.mark.slow
def test_a_truncated_shard_ends_the_run_in_one_line_and_keeps_the_checkpoints(tmp_path):
  data, run = tmp_path / "data", tmp_path / "run"
  common = ["--dataset=builtin", f"--data_dir={data}", "--builtin_num_train=64",
            "--builtin_num_val=4", f"--model_dir={run}", *TINY, "--eval_height=129",
            "--eval_width=129", "--checkpoint_every=1", "--checkpoint_input_pipeline=false",
            "--eval_after_train=false"]
  result = main_py(*common, "--train_steps=2")
  assert result.returncode == 0, result.stderr[-3000:]
  checkpoints = {path.name: path.read_bytes() for path in (run / "checkpoints").iterdir()
                 if path.is_file()}
  assert "ckpt-2.index" in checkpoints

  # The resumed run reads from the start of its (re-seeded) stream and meets the cut record.
  shard = data / "train-00001-of-00002.tfrecord"
  truncate_in_record(shard, 1)
  result = main_py(*common, "--train_steps=6")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: unreadable record 1 of {shard}: truncated record at"), last
  assert {path.name: path.read_bytes() for path in (run / "checkpoints").iterdir()
          if path.is_file()} == checkpoints

  shard = data / "val-00000-of-00001.tfrecord"
  truncate_in_record(shard, 2)
  result = main_py(*common, "--mode=eval")
  assert result.returncode == 1 and "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: unreadable record 2 of {shard}: truncated record at"), last
