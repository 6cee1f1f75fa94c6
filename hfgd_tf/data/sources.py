"""Where a split's examples come from: our (or the authors' iDS) TFRecord shards, as an
`ExampleSource`; any other `ExampleSource` (e.g. a prepared TFDS split, `tfds_source.py`) goes
through the same shuffling, augmentation and padding.

Compression (none, ZLIB or GZIP) is detected per file by trying to read its first record. A shard
still being written (`records.INCOMPLETE_SUFFIX`) is never read.
"""

import dataclasses
from typing import Any, Callable, Sequence, Union

import tensorflow as tf

from datasets import records
from hfgd_tf.data.decode import decode_example


def matching_files(file_patterns: Union[str, Sequence[str]]):
  """Sorted finished shards matching the patterns (never a shard still being written)."""
  patterns = [file_patterns] if isinstance(file_patterns, (str, bytes)) else list(file_patterns)
  return sorted({path for pattern in patterns for path in tf.io.gfile.glob(pattern)
                 if not path.endswith(records.INCOMPLETE_SUFFIX)})


def _list_files(file_patterns: Union[str, Sequence[str]]):
  files = matching_files(file_patterns)
  if not files:
    raise ValueError(f"no TFRecord files match {file_patterns}")
  return files


class UnreadableRecordError(ValueError):
  """A shard record that cannot be read or decoded; the message names the shard and the index."""


def detect_compression(path):
  """'' / 'ZLIB' / 'GZIP': the first that reads the file's first record without error."""
  for compression in ("", "ZLIB", "GZIP"):
    try:
      for _ in tf.data.TFRecordDataset(path, compression_type=compression).take(1):
        pass
      return compression
    except tf.errors.OpError:
      continue
  raise UnreadableRecordError(f"unreadable record 0 of {path}: not a TFRecord file with no "
                              "compression, ZLIB or GZIP")


def _shard_files(files, input_context):
  """Keeps this input pipeline's share of the files (file-level sharding across workers/hosts)."""
  if input_context is None or input_context.num_input_pipelines == 1:
    return files
  if len(files) < input_context.num_input_pipelines:
    raise ValueError(f"{len(files)} files cannot be sharded over "
                     f"{input_context.num_input_pipelines} input pipelines; convert with more "
                     "shards")
  return files[input_context.input_pipeline_id::input_context.num_input_pipelines]


def _records(files, shuffle_seed=None, deterministic=True, repeat=False):
  """Dataset of {record: serialized, path: its shard}, interleaving reads over the shard files."""
  compressions = [detect_compression(path) for path in files]
  file_ds = tf.data.Dataset.from_tensor_slices((files, compressions))
  if shuffle_seed is not None:
    file_ds = file_ds.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
  if repeat:
    file_ds = file_ds.repeat()
  return file_ds.interleave(
      lambda path, compression: tf.data.TFRecordDataset(path, compression).map(
          lambda record: {"record": record, "path": path}),
      cycle_length=min(len(files), 8), block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=deterministic)

@dataclasses.dataclass(frozen=True)
class ExampleSource:
  """Where a split's examples come from.

  `read(shuffle_seed=None, repeat=False, input_context=None)` -> dataset of still-encoded elements
  (cheap to shuffle), this input pipeline's share when `input_context` is given; `decode(element)`
  -> dict(image float32 [H, W, 3] in 0-255, label int32 [H, W] in the library convention,
  filename string, origin string naming the example in errors).
  """
  read: Callable[..., tf.data.Dataset]
  decode: Callable[[Any], dict]


def _tfrecord_source(file_patterns, deterministic, ids_ignore_label):
  """Our (or the authors' iDS) TFRecord shards as an ExampleSource; fails now if none match."""
  files = _list_files(file_patterns)

  def read(shuffle_seed=None, repeat=False, input_context=None):
    return _records(_shard_files(files, input_context), shuffle_seed, deterministic, repeat)

  def decode(element):
    example = decode_example(element["record"], ids_ignore_label)
    example["origin"] = tf.strings.join([element["path"], ":", example["filename"]])
    return example

  return ExampleSource(read, decode)


def as_source(source, deterministic, ids_ignore_label) -> ExampleSource:
  if isinstance(source, ExampleSource):
    return source
  return _tfrecord_source(source, deterministic, ids_ignore_label)

