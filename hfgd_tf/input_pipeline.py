"""TFRecords -> batches of (normalised image, label), as the original codebase fed HFGD.

Training (HFGD-era iDS `StandardAugmentationsPipeline`, reference §3.3), each step switchable by
`AugmentConfig`: random scale s from {min_scale, min_scale + step, ..., max_scale} (new size
floor(s*H) x floor(s*W); image bilinear, label nearest, both align_corners=True) -> optional
photometric distortion (contrast then saturation, each p=0.5, factor U[0.5, 1.5), no clip) -> random
brightness (p=0.5, delta U[-32, 32), then clip to [0, 256]) -> pad bottom/right to the crop (image
127.5, label ignore) -> random crop -> horizontal flip (p=0.5) -> normalise x*2/255 - 1.

Evaluation: pad bottom/right to a fixed size (no resize), keeping the original size so predictions
can be cropped back.

Sources: our TFRecord shards (file patterns), or any `ExampleSource` whose elements decode to the
same (image, label) example, e.g. a prepared TensorFlow Datasets split (`datasets/tfds_source.py`);
both go through the same shuffling, augmentation and padding.

Randomness is stateless, keyed by (seed, input pipeline id) folded with the element index, so a
given seed gives the same order and the same augmentations on every run.

Record formats, detected per example: the library's Model Garden keys (`image/encoded`, ...; see
`datasets/tfrecord.py`) and the authors' iDS keys (`image`, `label`, `height`, `width`, `depth`:
serialized tensors, image float32 [H, W, 3] in 0-255 or a string scalar with JPEG/PNG bytes, label
int32 [H, W, 1]). Compression (none, ZLIB or GZIP) is detected per file by trying to read its first
record. iDS Pascal Context uses 0 as ignore and 1..59 as classes: pass `ids_ignore_label=0` (the
value `DatasetInfo.ids_ignore_label` holds) to map it to 0..58 and 255.
"""

import contextlib
import dataclasses
import os
import re
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
from absl import logging

from datasets import records
from hfgd_tf.config import IGNORE_LABEL, AugmentConfig
from hfgd_tf.ops import resize

# Value that normalises to 0; the original's "mean pixel" for image padding.
IMAGE_PAD_VALUE = 127.5
# iDS serialized TensorProtos start with field 1 (dtype): tag byte 0x08, then the DataType enum.
_DT_STRING_BYTE = b"\x07"

_FEATURES = {
    records.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    records.FILENAME_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    records.LABEL_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "label": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
}


def normalize_image(image):
  """uint8 or float 0-255 -> float32 x*2/255 - 1 (so [0, 255] -> [-1, 1] and 127.5 -> 0)."""
  return tf.cast(image, tf.float32) * (2.0 / 255.0) - 1.0


def _decode_image_bytes(encoded):
  """JPEG or PNG bytes -> float32 [H, W, 3] in 0-255 (JPEG with the accurate integer IDCT)."""
  image = tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
      lambda: tf.io.decode_png(encoded, channels=3))
  return tf.cast(image, tf.float32)


def _decode_model_garden(features):
  image = _decode_image_bytes(features[records.IMAGE_KEY])
  label = tf.io.decode_png(features[records.LABEL_KEY], channels=1)
  return image, tf.cast(label[..., 0], tf.int32)


def _decode_ids(features, ids_ignore_label):
  height = tf.cast(features["height"], tf.int32)
  width = tf.cast(features["width"], tf.int32)
  serialized_image = features["image"]
  image = tf.cond(
      tf.equal(tf.strings.substr(serialized_image, 1, 1), _DT_STRING_BYTE),
      lambda: _decode_image_bytes(tf.io.parse_tensor(serialized_image, tf.string)),
      lambda: tf.reshape(tf.io.parse_tensor(serialized_image, tf.float32), [height, width, 3]))
  label = tf.reshape(tf.io.parse_tensor(features["label"], tf.int32), [height, width])  # [H,W,1]->
  if ids_ignore_label == 0:
    label = tf.where(label == 0, IGNORE_LABEL, label - 1)
  elif ids_ignore_label != IGNORE_LABEL:
    raise ValueError(f"ids_ignore_label must be 0 or {IGNORE_LABEL}, got {ids_ignore_label}")
  return image, label


def decode_example(serialized, ids_ignore_label=IGNORE_LABEL):
  """One serialized tf.train.Example (Model Garden or iDS keys) -> dict(image, label, filename).

  image: float32 [H, W, 3] in 0-255; label: int32 [H, W] in the library convention (0..K-1, 255);
  filename: string (empty for iDS records, which carry none).
  """
  features = tf.io.parse_single_example(serialized, _FEATURES)
  image, label = tf.cond(
      tf.strings.length(features["image"]) > 0,
      lambda: _decode_ids(features, ids_ignore_label),
      lambda: _decode_model_garden(features))
  image = tf.ensure_shape(image, [None, None, 3])
  label = tf.ensure_shape(label, [None, None])
  return {"image": image, "label": label, "filename": features[records.FILENAME_KEY]}


def _matching_files(file_patterns: Union[str, Sequence[str]]):
  """Sorted finished shards matching the patterns (never a shard still being written)."""
  patterns = [file_patterns] if isinstance(file_patterns, (str, bytes)) else list(file_patterns)
  return sorted({path for pattern in patterns for path in tf.io.gfile.glob(pattern)
                 if not path.endswith(records.INCOMPLETE_SUFFIX)})


def _list_files(file_patterns: Union[str, Sequence[str]]):
  files = _matching_files(file_patterns)
  if not files:
    raise ValueError(f"no TFRecord files match {file_patterns}")
  return files


class UnreadableRecordError(ValueError):
  """A shard record that cannot be read or decoded; the message names the shard and the index."""


def _detect_compression(path):
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
  compressions = [_detect_compression(path) for path in files]
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


def _checked_labels(label, num_classes, ignore_label, source):
  """Fails with a message naming the example when a label is neither a class nor ignore."""
  bad = tf.logical_and(tf.logical_or(label < 0, label >= num_classes), label != ignore_label)
  check = tf.debugging.Assert(
      tf.logical_not(tf.reduce_any(bad)),
      [f"label values must be in [0, {num_classes}) or equal {ignore_label}; bad example:", source,
       "bad values:", tf.boolean_mask(label, bad)], summarize=10)
  with tf.control_dependencies([check]):
    return tf.identity(label)


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


def _as_source(source, deterministic, ids_ignore_label) -> ExampleSource:
  if isinstance(source, ExampleSource):
    return source
  return _tfrecord_source(source, deterministic, ids_ignore_label)


def _decoded(source, element, validate_labels, num_classes, ignore_label):
  example = source.decode(element)
  if validate_labels:
    if num_classes is None:
      raise ValueError("validate_labels needs num_classes")
    example["label"] = _checked_labels(example["label"], num_classes, ignore_label,
                                       example["origin"])
  return example


def _limit_size(image, label, max_size):
  """Downscales so that the longer side is at most max_size (aspect kept, sizes floored)."""
  height, width = tf.shape(label)[0], tf.shape(label)[1]
  longer = tf.maximum(height, width)
  return tf.cond(longer > max_size,
                 lambda: _resize(image, label, height * max_size // longer,
                                 width * max_size // longer),
                 lambda: (image, label))


def decode_mapped_example(image_bytes, label_bytes, filename, label_lut, origin, max_size=None):
  """An example stored as encoded image and label-map bytes (e.g. a TFDS split) -> decode() dict.

  The label PNG holds raw values, mapped through `label_lut` (raw value -> class or ignore; -1
  marks values that must not occur). An unknown value, or a label whose size differs from the
  image's, fails naming `origin`. With `max_size`, an example whose longer side exceeds it is
  downscaled to it (image bilinear, label nearest, as the scale augmentation resizes).
  """
  image = _decode_image_bytes(image_bytes)
  raw = tf.cast(tf.io.decode_png(label_bytes, channels=1)[..., 0], tf.int32)  # [H, W, 1] -> [H, W]
  label = tf.gather(tf.constant(label_lut, tf.int32), raw)
  unknown = label < 0
  check = tf.debugging.Assert(
      tf.logical_and(tf.logical_not(tf.reduce_any(unknown)),
                     tf.reduce_all(tf.shape(image)[:2] == tf.shape(label))),
      ["example", origin, "has label values the dataset's mapping does not know:",
       tf.boolean_mask(raw, unknown), "or an image of size", tf.shape(image)[:2],
       "with a label of size", tf.shape(label)], summarize=10)
  with tf.control_dependencies([check]):
    label = tf.identity(label)
  if max_size:
    image, label = _limit_size(image, label, max_size)
  return {"image": tf.ensure_shape(image, [None, None, 3]),
          "label": tf.ensure_shape(label, [None, None]), "filename": filename, "origin": origin}


def split_source(dataset, data_dir, split):
  """What train_dataset/eval_dataset read for `split`: the adapter's examples of a prepared TFDS
  dataset for `tfds:<name>[/<config>]`, else the converted shards of `data_dir`."""
  from datasets import tfds_adapters  # pylint: disable=import-outside-toplevel
  if tfds_adapters.is_tfds_name(dataset):
    from datasets import tfds_source  # pylint: disable=import-outside-toplevel
    return tfds_source.example_source(dataset, data_dir, split)
  return records.split_files(data_dir, split)


def _resize(image, label, height, width):
  """Align-corners resize: image bilinear [H, W, 3], label nearest [H, W] -> [height, width]."""
  size = tf.stack([height, width])
  image = resize(image[None], size, align_corners=True)[0]
  label = resize(label[None, :, :, None], size, align_corners=True, method="nearest")[0, :, :, 0]
  return image, label


def _pad_bottom_right(image, label, height, width, ignore_label):
  """Pads up to at least height x width: image with 127.5, label with ignore."""
  pad_h = tf.maximum(height - tf.shape(image)[0], 0)
  pad_w = tf.maximum(width - tf.shape(image)[1], 0)
  image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]], constant_values=IMAGE_PAD_VALUE)
  label = tf.pad(label, [[0, pad_h], [0, pad_w]], constant_values=ignore_label)
  return image, label


def _with_probability(seed, probability, transform, value):
  """transform(value) when U[0, 1) <= probability (the original's test), else value."""
  apply = tf.random.stateless_uniform([], seed) <= probability
  return tf.cond(apply, lambda: transform(value), lambda: value)


def augment_example(image, label, config: AugmentConfig, seed):
  """The HFGD-era training augmentation of one example (module docstring for the order).

  image: float32 [H, W, 3] in 0-255; label: int32 [H, W]; seed: int [2] (stateless seed).
  Returns image float32 [crop_h, crop_w, 3] (still 0-255, not normalised), label int32 [crop_h,
  crop_w].
  """
  seeds = tf.random.experimental.stateless_split(seed, num=10)  # [10, 2], one per random draw
  scales = config.scales()
  if not np.all(scales == 1.0):
    index = tf.random.stateless_uniform([], seeds[0], 0, len(scales), dtype=tf.int32)
    scale = tf.gather(tf.constant(scales), index)
    shape = tf.cast(tf.shape(label), tf.float32)
    new_size = tf.cast(tf.floor(scale * shape), tf.int32)
    image, label = _resize(image, label, new_size[0], new_size[1])

  if config.photometric_distortion:
    contrast = tf.random.stateless_uniform([], seeds[2], 0.5, 1.5)
    image = _with_probability(seeds[1], 0.5, lambda x: tf.image.adjust_contrast(x, contrast),
                              image)
    saturation = tf.random.stateless_uniform([], seeds[4], 0.5, 1.5)
    image = _with_probability(seeds[3], 0.5, lambda x: tf.image.adjust_saturation(x, saturation),
                              image)

  if config.random_brightness:
    delta = tf.random.stateless_uniform([], seeds[6], -32.0, 32.0)
    image = _with_probability(seeds[5], 0.5, lambda x: x + delta, image)
    image = tf.clip_by_value(image, 0.0, 256.0)

  crop_h, crop_w = config.crop_height, config.crop_width
  image, label = _pad_bottom_right(image, label, crop_h, crop_w, config.ignore_label)
  offset_y = tf.random.stateless_uniform([], seeds[7], 0, tf.shape(label)[0] - crop_h + 1,
                                         dtype=tf.int32)
  offset_x = tf.random.stateless_uniform([], seeds[8], 0, tf.shape(label)[1] - crop_w + 1,
                                         dtype=tf.int32)
  image = image[offset_y:offset_y + crop_h, offset_x:offset_x + crop_w]
  label = label[offset_y:offset_y + crop_h, offset_x:offset_x + crop_w]

  if config.flip:
    image, label = _with_probability(
        seeds[9], 0.5, lambda pair: (tf.reverse(pair[0], [1]), tf.reverse(pair[1], [1])),
        (image, label))
  return tf.ensure_shape(image, [crop_h, crop_w, 3]), tf.ensure_shape(label, [crop_h, crop_w])


def _random_seed():
  return int.from_bytes(os.urandom(4), "little")


def train_dataset(source, batch_size, augment: AugmentConfig, seed: Optional[int] = None,
                  input_context: Optional[tf.distribute.InputContext] = None, shuffle_buffer=1000,
                  validate_labels=False, num_classes: Optional[int] = None,
                  ids_ignore_label=IGNORE_LABEL) -> tf.data.Dataset:
  """Infinite training batches (images float32 [B, crop_h, crop_w, 3] normalised, labels int32
  [B, crop_h, crop_w]); B is the per-replica batch when `input_context` is given. `source`: file
  patterns of TFRecord shards, or an ExampleSource.

  With a seed, order and augmentation are identical from run to run; without one they are random.
  `validate_labels` (needs `num_classes`) fails on the first label outside [0, K) and != ignore.
  """
  deterministic = seed is not None
  seed = seed if seed is not None else _random_seed()
  source = _as_source(source, deterministic, ids_ignore_label)
  ds = source.read(shuffle_seed=seed, repeat=True, input_context=input_context)
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  pipeline_id = input_context.input_pipeline_id if input_context is not None else 0
  base_seed = tf.constant([seed, pipeline_id], tf.int64)

  def parse_and_augment(index, element):
    example = _decoded(source, element, validate_labels, num_classes, augment.ignore_label)
    element_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    image, label = augment_example(example["image"], example["label"], augment, element_seed)
    return normalize_image(image), label

  ds = ds.shuffle(shuffle_buffer, seed=seed).enumerate()
  ds = ds.map(parse_and_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
  return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(source, batch_size, eval_height, eval_width, ignore_label=IGNORE_LABEL,
                 input_context: Optional[tf.distribute.InputContext] = None, validate_labels=False,
                 num_classes: Optional[int] = None, ids_ignore_label=IGNORE_LABEL,
                 max_examples: Optional[int] = None) -> tf.data.Dataset:
  """One pass, in a fixed order, of padded evaluation batches (last batch may be smaller):
  dict(image float32 [B, eH, eW, 3] normalised (padding -> 0), label int32 [B, eH, eW] padded with
  ignore, height/width int32 [B] original sizes, filename string [B]). `max_examples`: only the
  first that many examples (of this input pipeline).

  An image larger than eval_height x eval_width is an error naming it (no resize is done).
  `source`: file patterns of TFRecord shards, or an ExampleSource.
  """
  source = _as_source(source, True, ids_ignore_label)
  ds = source.read(input_context=input_context)
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(batch_size)

  def parse_and_pad(element):
    example = _decoded(source, element, validate_labels, num_classes, ignore_label)
    image, label = example["image"], example["label"]
    height, width = tf.shape(label)[0], tf.shape(label)[1]
    fits = tf.debugging.Assert(
        tf.logical_and(height <= eval_height, width <= eval_width),
        ["image", example["origin"], "of size", height, width,
         f"is larger than the eval size {eval_height}x{eval_width}; raise the eval size"])
    with tf.control_dependencies([fits]):
      image, label = _pad_bottom_right(image, label, eval_height, eval_width, ignore_label)
    return {"image": normalize_image(tf.ensure_shape(image, [eval_height, eval_width, 3])),
            "label": tf.ensure_shape(label, [eval_height, eval_width]),
            "height": height, "width": width, "filename": example["filename"]}

  if max_examples:
    ds = ds.take(max_examples)
  ds = ds.map(parse_and_pad, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)


def examples(source, ids_ignore_label=IGNORE_LABEL) -> tf.data.Dataset:
  """The decoded examples as stored, in a fixed order, neither augmented nor padded nor batched:
  dict(image float32 [H, W, 3] in 0-255, label int32 [H, W], filename string, origin string).
  `source`: file patterns of TFRecord shards, or an ExampleSource."""
  source = _as_source(source, True, ids_ignore_label)
  return source.read().map(source.decode)
def _short_reason(message):
  """The gist of a TF error message: its last paragraph without node names, op tags and the
  tf.data transformation prefix."""
  message = re.sub(r"\{\{[^}]*\}\}|\[\[[^\]]*\]\]|\[Op:[^\]]*\]|name:\s*$|Error in user-defined "
                   r"function passed to \S+ transformation with iterator: \S+: ", "",
                   (message or "").rsplit("\n\n", 1)[-1])
  return " ".join(message.split())


def _record_checks(record, ids_ignore_label, num_classes):
  """Decodes one record -> int32 [8]: label height, width, image height, width, the number of
  label values neither a class (< num_classes) nor ignore, one such value (else -1), and the
  smallest and largest class present (K and -1 when there is none)."""
  example = decode_example(record, ids_ignore_label)
  label = example["label"]
  is_class = tf.logical_and(label >= 0, label < num_classes)
  bad = tf.logical_and(tf.logical_not(is_class), label != IGNORE_LABEL)
  return tf.stack([
      tf.shape(label)[0], tf.shape(label)[1], tf.shape(example["image"])[0],
      tf.shape(example["image"])[1], tf.math.count_nonzero(bad, dtype=tf.int32),
      tf.reduce_max(tf.where(bad, label, -1)),
      tf.reduce_min(tf.where(is_class, label, num_classes)),
      tf.reduce_max(tf.where(is_class, label, -1))])


def scan_shard(path, decode=True, ids_ignore_label=IGNORE_LABEL, num_classes=IGNORE_LABEL,
               on_record=None):
  """Reads every record of one shard (and decodes it with `decode`); returns the record count.

  `on_record(index, checks)` gets, when decoding, the int32 [8] of `_record_checks` (sizes and
  label values against `num_classes`), else None. The first record that cannot be read or decoded
  raises UnreadableRecordError naming the shard and the record's index in it: records come out in
  order, so the index is the number read before the failure.
  """
  ds = tf.data.TFRecordDataset(path, _detect_compression(path))
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
  files = _matching_files(file_patterns)
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
