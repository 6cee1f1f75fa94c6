"""The datasets training and evaluation read: examples of a source -> batches.

Training: shuffled, augmented (`augment.py`), normalised x*2/255 - 1, batched, repeated forever.
Evaluation: pad bottom/right to a fixed size (no resize), keeping the original size so predictions
can be cropped back. Sources: file patterns of TFRecord shards or an `ExampleSource`
(`sources.py`); `split_source` picks the one a run's dataset names.

Randomness is stateless, keyed by (seed, input pipeline id) folded with the element index, so a
given seed gives the same order and the same augmentations on every run.
"""

import os
from typing import Optional

import tensorflow as tf

from datasets import records
from hfgd_tf.config import IGNORE_LABEL, AugmentConfig
from hfgd_tf.data.augment import augment_example, pad_bottom_right
from hfgd_tf.data.sources import as_source
from hfgd_tf.ops import normalize_image


def _checked_labels(label, num_classes, ignore_label, source):
  """Fails with a message naming the example when a label is neither a class nor ignore."""
  bad = tf.logical_and(tf.logical_or(label < 0, label >= num_classes), label != ignore_label)
  check = tf.debugging.Assert(
      tf.logical_not(tf.reduce_any(bad)),
      [f"label values must be in [0, {num_classes}) or equal {ignore_label}; bad example:", source,
       "bad values:", tf.boolean_mask(label, bad)], summarize=10)
  with tf.control_dependencies([check]):
    return tf.identity(label)


def _decoded(source, element, validate_labels, num_classes, ignore_label):
  example = source.decode(element)
  if validate_labels:
    if num_classes is None:
      raise ValueError("validate_labels needs num_classes")
    example["label"] = _checked_labels(example["label"], num_classes, ignore_label,
                                       example["origin"])
  return example


def split_source(dataset, data_dir, split):
  """What train_dataset/eval_dataset read for `split`: the adapter's examples of a prepared TFDS
  dataset for `tfds:<name>[/<config>]`, else the converted shards of `data_dir`."""
  from datasets import tfds_adapters  # pylint: disable=import-outside-toplevel
  if tfds_adapters.is_tfds_name(dataset):
    from hfgd_tf.data import tfds_source  # pylint: disable=import-outside-toplevel
    return tfds_source.example_source(dataset, data_dir, split)
  return records.split_files(data_dir, split)


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
  source = as_source(source, deterministic, ids_ignore_label)
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


# Rescaled eval images are padded up to a multiple of this, and batched with others of that size.
RESCALE_BUCKET = 128


def rescaled_size(height, width, rescale):
  """mmseg's keep-ratio rescale of an image to `rescale` = (long, short): the largest scale at
  which its long side is <= long and its short side <= short; sides int(side * scale + 0.5).
  height, width: int32 scalars; returns int32 (height, width)."""
  long_side, short_side = rescale
  sides = tf.cast(tf.stack([height, width]), tf.float32)
  scale = tf.minimum(long_side / tf.reduce_max(sides), short_side / tf.reduce_min(sides))
  new = tf.cast(sides * scale + 0.5, tf.int32)
  return new[0], new[1]


def eval_dataset(source, batch_size, eval_height, eval_width, ignore_label=IGNORE_LABEL,
                 input_context: Optional[tf.distribute.InputContext] = None, validate_labels=False,
                 num_classes: Optional[int] = None, ids_ignore_label=IGNORE_LABEL,
                 max_examples: Optional[int] = None, rescale=None) -> tf.data.Dataset:
  """One pass, in a fixed order, of padded evaluation batches (last batch may be smaller):
  dict(image float32 [B, eH, eW, 3] normalised (padding -> 0), label int32 [B, eH, eW] padded with
  ignore, height/width int32 [B] original sizes, filename string [B]). `max_examples`: only the
  first that many examples (of this input pipeline).

  An image larger than eval_height x eval_width is an error naming it (no resize is done).
  With `rescale` = (long, short) instead (mmseg's test resize, e.g. (2048, 512) for ADE20K), each
  image is resized bilinearly keeping its ratio (`rescaled_size`) and padded up to a multiple of
  RESCALE_BUCKET; images of one padded size are batched together (so a batch is never padded to
  the largest image of the split) and eval_height/eval_width are not used. The label stays at its
  original resolution, padded with ignore to the batch's largest, and scaled_height/scaled_width
  int32 [B] give the rescaled sizes: predictions are resized back to the label (evaluation.py).
  `source`: file patterns of TFRecord shards, or an ExampleSource.
  """
  source = as_source(source, True, ids_ignore_label)
  ds = source.read(input_context=input_context)
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  if max_examples:
    ds = ds.take(max_examples)
  if rescale is not None:
    return _rescaled_eval_batches(ds, source, batch_size, rescale, ignore_label, validate_labels,
                                  num_classes)

  def parse_and_pad(element):
    example = _decoded(source, element, validate_labels, num_classes, ignore_label)
    image, label = example["image"], example["label"]
    height, width = tf.shape(label)[0], tf.shape(label)[1]
    fits = tf.debugging.Assert(
        tf.logical_and(height <= eval_height, width <= eval_width),
        ["image", example["origin"], "of size", height, width,
         f"is larger than the eval size {eval_height}x{eval_width}; raise the eval size"])
    with tf.control_dependencies([fits]):
      image, label = pad_bottom_right(image, label, eval_height, eval_width, ignore_label)
    return {"image": normalize_image(tf.ensure_shape(image, [eval_height, eval_width, 3])),
            "label": tf.ensure_shape(label, [eval_height, eval_width]),
            "height": height, "width": width, "filename": example["filename"]}

  ds = ds.map(parse_and_pad, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)


def _rescaled_eval_batches(ds, source, batch_size, rescale, ignore_label, validate_labels,
                           num_classes):
  """eval_dataset's batches with `rescale`: images resized and bucketed, labels as they are."""

  def parse_and_rescale(element):
    example = _decoded(source, element, validate_labels, num_classes, ignore_label)
    image, label = example["image"], example["label"]
    height, width = tf.shape(label)[0], tf.shape(label)[1]
    scaled_height, scaled_width = rescaled_size(height, width, rescale)
    image = tf.image.resize(image, [scaled_height, scaled_width])  # bilinear, as mmseg's
    bucket_height = -(-scaled_height // RESCALE_BUCKET) * RESCALE_BUCKET
    bucket_width = -(-scaled_width // RESCALE_BUCKET) * RESCALE_BUCKET
    image = tf.pad(normalize_image(image), [[0, bucket_height - scaled_height],
                                            [0, bucket_width - scaled_width], [0, 0]])
    return {"image": image, "label": label, "height": height, "width": width,
            "scaled_height": scaled_height, "scaled_width": scaled_width,
            "filename": example["filename"]}

  def bucket(element):
    shape = tf.cast(tf.shape(element["image"])[:2] // RESCALE_BUCKET, tf.int64)
    return shape[0] * 1024 + shape[1]

  padding = {"image": 0.0, "label": ignore_label, "height": 0, "width": 0, "scaled_height": 0,
             "scaled_width": 0, "filename": ""}
  ds = ds.map(parse_and_rescale, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.group_by_window(
      bucket, lambda _, window: window.padded_batch(batch_size, padding_values=padding),
      window_size=batch_size)
  return ds.prefetch(tf.data.AUTOTUNE)


def examples(source, ids_ignore_label=IGNORE_LABEL) -> tf.data.Dataset:
  """The decoded examples as stored, in a fixed order, neither augmented nor padded nor batched:
  dict(image float32 [H, W, 3] in 0-255, label int32 [H, W], filename string, origin string).
  `source`: file patterns of TFRecord shards, or an ExampleSource."""
  source = as_source(source, True, ids_ignore_label)
  return source.read().map(source.decode)
