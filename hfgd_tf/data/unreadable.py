"""Naming the shard and record behind a failed read, located after the fact (a cost paid only on
failure; the normal read path carries no file names)."""

import contextlib
import re

import tensorflow as tf
from absl import logging

from hfgd_tf.config import IGNORE_LABEL
from hfgd_tf.data.decode import decode_example
from hfgd_tf.data.sources import UnreadableRecordError, detect_compression, matching_files


def _short_reason(message):
  """The gist of a TF error message: its last paragraph without node names, op tags and the
  tf.data transformation prefix."""
  message = re.sub(r"\{\{[^}]*\}\}|\[\[[^\]]*\]\]|\[Op:[^\]]*\]|name:\s*$|Error in user-defined "
                   r"function passed to \S+ transformation with iterator: \S+: ", "",
                   (message or "").rsplit("\n\n", 1)[-1])
  return " ".join(message.split())


def _record_checks(record, ids_ignore_label, num_classes=None):
  """Decodes one record -> int32 [4]: label height, width, image height, width; with
  `num_classes`, int32 [8]: then also the number of label values neither a class (< num_classes)
  nor ignore, one such value (else -1), and the smallest and largest class present (K and -1 when
  there is none)."""
  example = decode_example(record, ids_ignore_label)
  label = example["label"]
  sizes = [tf.shape(label)[0], tf.shape(label)[1], tf.shape(example["image"])[0],
           tf.shape(example["image"])[1]]
  if num_classes is None:
    return tf.stack(sizes)
  is_class = tf.logical_and(label >= 0, label < num_classes)
  bad = tf.logical_and(tf.logical_not(is_class), label != IGNORE_LABEL)
  return tf.stack(sizes + [
      tf.math.count_nonzero(bad, dtype=tf.int32), tf.reduce_max(tf.where(bad, label, -1)),
      tf.reduce_min(tf.where(is_class, label, num_classes)),
      tf.reduce_max(tf.where(is_class, label, -1))])


def scan_shard(path, decode=True, ids_ignore_label=IGNORE_LABEL, num_classes=None,
               on_record=None):
  """Reads every record of one shard (and decodes it with `decode`); returns the record count.

  `on_record(index, checks)` gets, when decoding, the int32 array of `_record_checks` (sizes, and
  with `num_classes` the label values against it), else None. The first record that cannot be
  read or decoded raises UnreadableRecordError naming the shard and the record's index in it:
  records come out in order, so the index is the number read before the failure.
  """
  ds = tf.data.TFRecordDataset(path, detect_compression(path))
  if decode:
    ds = ds.map(lambda record: _record_checks(record, ids_ignore_label, num_classes),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  index = 0
  try:
    for checks in ds:
      if on_record is not None:
        on_record(index, checks.numpy() if decode else None)
      index += 1
  except tf.errors.OpError as error:
    raise UnreadableRecordError(f"unreadable record {index} of {path}: "
                                f"{_short_reason(error.message)}") from error
  return index


def locate_unreadable_record(file_patterns, ids_ignore_label=IGNORE_LABEL):
  """The UnreadableRecordError of the first bad record among the shards, or None.

  A first pass only reads (a truncated or corrupt file fails its length or CRC check: I/O speed);
  only if every record reads does a second pass decode them all.
  """
  files = matching_files(file_patterns)
  for decode in (False, True):
    for path in files:
      try:
        scan_shard(path, decode, ids_ignore_label)
      except UnreadableRecordError as error:
        return error
  return None


@contextlib.contextmanager
def naming_unreadable_records(file_patterns, ids_ignore_label=IGNORE_LABEL):
  """Turns an input-pipeline error inside the block into an UnreadableRecordError naming the shard
  and the record.

  tf.data reports a truncated or corrupt record (DataLossError) or an undecodable one
  (InvalidArgumentError) without the file name, wherever the iterator runs (a training step, an
  evaluation loop). Rather than carrying file names through every read, errors raised by an
  iterator (`IteratorGetNext` in the message) are located after the fact by scanning the shards
  of `file_patterns`: a cost paid only on failure, and the normal read path stays as fast as
  before. An error no scan can place is re-raised unchanged.
  """
  try:
    yield
  except tf.errors.OpError as error:
    if "IteratorGetNext" not in (error.message or ""):
      raise
    logging.error("reading the data failed (%s); locating the bad record",
                  _short_reason(error.message))
    located = locate_unreadable_record(file_patterns, ids_ignore_label)
    if located is None:
      raise
    raise located from error
