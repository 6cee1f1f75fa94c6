"""Stored examples -> image float32 [H, W, 3] in 0-255 and label int32 [H, W] (0..K-1, 255).

Record formats, detected per example: the library's Model Garden keys (`image/encoded`, ...; see
`datasets/tfrecord.py`) and the authors' iDS keys (`image`, `label`, `height`, `width`, `depth`:
serialized tensors, image float32 [H, W, 3] in 0-255 or a string scalar with JPEG/PNG bytes, label
int32 [H, W, 1]). iDS Pascal Context uses 0 as ignore and 1..59 as classes: pass
`ids_ignore_label=0` (the value `DatasetInfo.ids_ignore_label` holds) to map it to 0..58 and 255.
Examples stored as encoded image and label-map bytes (a TFDS split) go through
`decode_mapped_example`.
"""

import tensorflow as tf

from datasets import records
from hfgd_tf.config import IGNORE_LABEL
from hfgd_tf.data.augment import resize_example

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


def _limit_size(image, label, max_size):
  """Downscales so that the longer side is at most max_size (aspect kept, sizes floored)."""
  height, width = tf.shape(label)[0], tf.shape(label)[1]
  longer = tf.maximum(height, width)
  return tf.cond(longer > max_size,
                 lambda: resize_example(image, label, height * max_size // longer,
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

