"""The HFGD-era training augmentation of one example (iDS `StandardAugmentationsPipeline`,
reference §3.3), each step switchable by `AugmentConfig`.

Random scale s from {min_scale, min_scale + step, ..., max_scale} (new size floor(s*H) x floor(s*W);
image bilinear, label nearest, both align_corners=True) -> optional photometric distortion
(contrast then saturation, each p=0.5, factor U[0.5, 1.5), no clip) -> random brightness (p=0.5,
delta U[-32, 32), then clip to [0, 256]) -> pad bottom/right to the crop (image 127.5, label
ignore) -> random crop -> horizontal flip (p=0.5). Normalisation (x*2/255 - 1) follows in the
pipeline. Randomness is stateless: one seed [2] per example decides every draw.
"""

import numpy as np
import tensorflow as tf

from hfgd_tf.config import AugmentConfig
from hfgd_tf.ops import IMAGE_PAD_VALUE, resize


def resize_example(image, label, height, width):
  """Align-corners resize: image bilinear [H, W, 3], label nearest [H, W] -> [height, width]."""
  size = tf.stack([height, width])
  image = resize(image[None], size, align_corners=True)[0]
  label = resize(label[None, :, :, None], size, align_corners=True, method="nearest")[0, :, :, 0]
  return image, label


def pad_bottom_right(image, label, height, width, ignore_label):
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
    image, label = resize_example(image, label, new_size[0], new_size[1])

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
  image, label = pad_bottom_right(image, label, crop_h, crop_w, config.ignore_label)
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

