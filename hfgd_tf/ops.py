"""Tensor operations the model, the data pipeline, evaluation, predict and export share."""

import tensorflow as tf

# Value that normalises to 0; the original's "mean pixel" for image padding.
IMAGE_PAD_VALUE = 127.5


def normalize_image(image):
  """uint8 or float 0-255 -> float32 x*2/255 - 1 (so [0, 255] -> [-1, 1] and 127.5 -> 0)."""
  return tf.cast(image, tf.float32) * (2.0 / 255.0) - 1.0


def denormalize_image(image):
  """The inverse of `normalize_image`, to show a model input: [-1, 1] -> uint8 0-255, rounded
  (exact for every uint8 value) and clipped."""
  values = tf.round((tf.cast(image, tf.float32) + 1.0) * 127.5)
  return tf.cast(tf.clip_by_value(values, 0.0, 255.0), tf.uint8)


def resize(images, size, align_corners=True, method="bilinear"):
  """Resizes NHWC `images` to `size` = (height, width); works on dynamic shapes and in graphs.

  align_corners=True is what the original did in the HFGD era: with sizes 2^k*m+1 (513, 257, 129,
  65, 33, 17) it maps grids onto each other exactly. The result keeps the input dtype (TF's
  bilinear kernels return float32).
  """
  dtype = images.dtype
  if method == "bilinear":
    out = tf.raw_ops.ResizeBilinear(images=images, size=size, align_corners=align_corners,
                                    half_pixel_centers=not align_corners)
  elif method == "nearest":
    out = tf.raw_ops.ResizeNearestNeighbor(images=images, size=size, align_corners=align_corners,
                                           half_pixel_centers=not align_corners)
  else:
    raise ValueError(f"unknown resize method {method!r}; choose bilinear or nearest")
  return tf.cast(out, dtype)


def spatial_size(x):
  """(height, width) of an NHWC tensor, static where known, dynamic otherwise."""
  static = x.shape[1:3]
  dynamic = tf.shape(x)[1:3]
  return (static[0] if static[0] is not None else dynamic[0],
          static[1] if static[1] is not None else dynamic[1])
