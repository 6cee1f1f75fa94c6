"""TensorBoard scalars and images written with `tf.summary.write` alone.

`tf.summary.scalar/image` live in the tensorboard package, which TensorFlow 2.21 does not install;
these write the same records (the scalars and images plugins' formats), so training logs need no
extra dependency and TensorBoard, where installed, reads them as usual.
"""

import tensorflow as tf
from tensorflow.core.framework import summary_pb2


def _metadata(plugin_name):
  return summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin_name))


def scalar(name, value, step):
  """One float under `name` at `step` (scalars plugin)."""
  return tf.summary.write(name, tf.cast(value, tf.float32), step=step,
                          metadata=_metadata("scalars"))


def image(name, images, step, max_outputs=4):
  """uint8 or [0, 1] float images [N, H, W, 3] as PNGs (images plugin: [width, height, png...])."""
  images = tf.convert_to_tensor(images)[:max_outputs]
  if images.dtype != tf.uint8:
    images = tf.image.convert_image_dtype(tf.clip_by_value(images, 0.0, 1.0), tf.uint8,
                                          saturate=True)
  shape = tf.shape(images)
  encoded = tf.map_fn(tf.image.encode_png, images, fn_output_signature=tf.string)
  tensor = tf.concat([tf.strings.as_string([shape[2], shape[1]]), encoded], axis=0)
  return tf.summary.write(name, tensor, step=step, metadata=_metadata("images"))
