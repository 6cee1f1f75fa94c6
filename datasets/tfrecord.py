"""Sharded TFRecord writer shared by every dataset converter.

Records use the TF Model Garden / DeepLab keys (datasets/records.py), so other TF tools read them
too: the original JPEG bytes (or PNG), format, height, width, channels, filename (the example id),
and the label as a uint8 PNG (classes 0..K-1 and 255 = ignore).

Files are `<split>-00000-of-000NN.tfrecord` plus `dataset_info.json`. Safety: each shard is written
to `<shard>.incomplete` and renamed when closed, so only finished shards carry the final name; a
rerun skips finished shards and overwrites stale `.incomplete` files; `dataset_info.json` is written
last, so its presence means the conversion finished.
"""

import math
import multiprocessing
import os
import sys
import time
from typing import Dict, Optional, Sequence

import numpy as np
from absl import logging

from datasets import core, records
from hfgd_tf.atomic_files import atomic_path, write_json
from hfgd_tf.quiet_import import import_tensorflow_quietly

tf = import_tensorflow_quietly()

def default_num_shards(num_examples):
  """At least 16 shards once a split has 512+ examples (file-level sharding over workers and TPU
  hosts), about 1024 examples per shard for big splits, and never fewer than 32 examples a shard."""
  return max(1, min(num_examples // 32, max(16, math.ceil(num_examples / 1024))))


def _bytes_feature(value):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def serialize_example(example: core.EncodedExample) -> bytes:
  features = {
      records.IMAGE_KEY: _bytes_feature(example.image_bytes),
      records.IMAGE_FORMAT_KEY: _bytes_feature(example.image_format.encode()),
      records.HEIGHT_KEY: _int_feature(example.height),
      records.WIDTH_KEY: _int_feature(example.width),
      records.CHANNELS_KEY: _int_feature(3),
      records.FILENAME_KEY: _bytes_feature(example.key.encode()),
      records.LABEL_KEY: _bytes_feature(core.encode_png(example.label)),
      records.LABEL_FORMAT_KEY: _bytes_feature(b"png"),
  }
  # deterministic=True sorts the feature map, so bytes do not depend on the process hash seed.
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(
      deterministic=True)


def _check_label(example: core.EncodedExample, info: core.DatasetInfo):
  """Backstop for every dataset: the stored label must already be in the library convention."""
  label = example.label
  if label.dtype != np.uint8 or label.ndim != 2:
    raise core.ConversionError(f"example {example.key}: label must be uint8 [H, W], got "
                               f"{label.dtype} {label.shape}")
  bad = (label >= info.num_classes) & (label != info.ignore_label)
  if np.any(bad):
    raise core.ConversionError(f"example {example.key}: label values {np.unique(label[bad])[:10]} "
                               f"are neither a class (< {info.num_classes}) nor ignore")


def _write_shard(task):
  """Writes one shard: (info, load_example, work items, final path) -> examples written.

  Runs in a worker process: `load_example`, a dataset module's function, travels by reference (a
  spawned worker imports its module). On any error the partial file is removed and the error
  re-raised, so neither a finished-looking half shard nor other finished shards are affected.
  """
  info, load_example, items, path = task
  with atomic_path(path, records.INCOMPLETE_SUFFIX) as temp_path:
    with tf.io.TFRecordWriter(temp_path) as writer:
      for item in items:
        example = load_example(item)
        _check_label(example, info)
        writer.write(serialize_example(example))
  return len(items)


class ProgressBar:
  """A one-line `\\r` progress bar on stderr (a CLI display, not logging)."""

  def __init__(self, label, total, enabled, unit="examples"):
    self.label, self.total, self.enabled, self.unit = label, total, enabled, unit
    self.done = 0
    self.start = time.monotonic()

  def advance(self, count):
    self.done += count
    if not self.enabled:
      return
    fraction = self.done / max(self.total, 1)
    rate = self.done / max(time.monotonic() - self.start, 1e-6)
    bar = "#" * int(30 * fraction)
    sys.stderr.write(f"\r{self.label}: [{bar:<30}] {self.done}/{self.total} {self.unit} "
                     f"{rate:.1f}/s")
    sys.stderr.flush()

  def close(self):
    if self.enabled:
      sys.stderr.write("\n")
      sys.stderr.flush()


def write_split(info: core.DatasetInfo, load_example, split, items: Sequence, output_dir,
                num_shards: Optional[int] = None, num_workers=1, show_progress=False):
  """Writes the examples of one split into shards; returns the number of shards. `load_example`
  (the dataset module's, item -> core.EncodedExample) turns each of `items` into an example.

  Shard k holds items [k*N/S, (k+1)*N/S), so a rerun assigns the same items to the same shard and
  can skip the finished ones. Workers are spawned processes (forking after TensorFlow is loaded is
  unsafe); `num_workers=1` writes in this process.
  """
  num_shards = num_shards or default_num_shards(len(items))
  tf.io.gfile.makedirs(output_dir)
  if num_shards > max(len(items), 1):
    raise ValueError(f"{split}: {num_shards} shards for {len(items)} examples")
  existing = set(tf.io.gfile.glob(os.path.join(output_dir, records.finished_shard_pattern(split))))
  wanted = [os.path.join(output_dir, records.shard_filename(split, k, num_shards))
            for k in range(num_shards)]
  foreign = existing - set(wanted)
  if foreign:
    raise ValueError(f"{output_dir} already holds {split} shards of another shard count "
                     f"({sorted(foreign)[0]}); remove them or convert with the same --num_shards")
  bounds = [len(items) * k // num_shards for k in range(num_shards + 1)]
  tasks = [(info, load_example, items[bounds[k]:bounds[k + 1]], wanted[k])
           for k in range(num_shards) if wanted[k] not in existing]
  remaining = sum(len(task[2]) for task in tasks)
  logging.info("%s: writing %d of %d shards (%d of %d examples) to %s", split, len(tasks),
               num_shards, remaining, len(items), output_dir)
  progress = ProgressBar(split, len(items), show_progress)
  progress.advance(len(items) - remaining)
  try:
    if num_workers <= 1 or len(tasks) <= 1:
      for task in tasks:
        progress.advance(_write_shard(task))
    else:
      with multiprocessing.get_context("spawn").Pool(min(num_workers, len(tasks))) as pool:
        for count in pool.imap_unordered(_write_shard, tasks):
          progress.advance(count)
  finally:
    progress.close()
  return num_shards


def write_dataset(info: core.DatasetInfo, load_example, split_items: Dict[str, Sequence],
                  output_dir, num_shards: Optional[int] = None, num_workers=1, show_progress=False,
                  extra_info: Optional[dict] = None):
  """Writes every split (`write_split`), then `dataset_info.json`; returns the info dict it
  wrote."""
  splits = {}
  for split, items in split_items.items():
    shards = write_split(info, load_example, split, items, output_dir, num_shards, num_workers,
                         show_progress)
    splits[split] = {"num_examples": len(items), "num_shards": shards,
                     "file_pattern": records.finished_shard_pattern(split)}
  content = {"format_version": records.FORMAT_VERSION, **info.to_json_dict(), "splits": splits,
             **(extra_info or {})}
  write_json(records.info_path(output_dir), content, indent=1)
  return content
