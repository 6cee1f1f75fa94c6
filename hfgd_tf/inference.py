"""The inference protocol as the original ran it: multi-scale + flip, sliding window (reference
§1.4); evaluation, predict and export all run it from here.

For each scale the image is resized bilinearly (align_corners=True) to `scaled_size`, run whole or
by sliding window, and the logits are resized back; raw logits (no softmax) are summed over scales
and, with `flip`, over the mirrored image, then averaged.
"""

import numpy as np
import tensorflow as tf

from hfgd_tf.ops import resize, spatial_size

SS_SCALES = (1.0,)


def scaled_size(size, scale):
  """int(scale * size), plus 1 when `size` is odd and the result even (the original's pad_mode=1).

  Keeping odd sides odd keeps align-corners grids aligned (513 -> 385 at 0.75, not 384). `size` is a
  Python int or an int32 tensor (dynamic shapes); the product is taken in float64 like Python's.
  """
  if isinstance(size, (int, np.integer)):
    new = int(scale * int(size))
    return new + 1 if size % 2 == 1 and new % 2 == 0 else new
  size = tf.convert_to_tensor(size, tf.int32)
  new = tf.cast(tf.floor(tf.cast(size, tf.float64) * scale), tf.int32)
  return new + tf.cast(tf.logical_and(size % 2 == 1, new % 2 == 0), tf.int32)


def _window_offsets(length, window):
  """(window, stride, count) along one side: window = min(window, length), stride = floor(2/3 w).

  Offsets are 0, s, 2s, ... and one window flush with the end when the last does not reach it,
  i.e. offset_i = min(i * s, length - window) for i < count = ceil((length - window) / s) + 1.
  """
  window = tf.minimum(window, length)
  stride = tf.maximum(2 * window // 3, 1)
  count = (length - window + stride - 1) // stride + 1
  return window, stride, count


def sliding_window_logits(model_fn, images, window, unroll=False):
  """Logits of `model_fn` applied window by window, averaged where windows overlap.

  images: float32 [N, H, W, 3]; window: int or (height, width); model_fn maps [N, h, w, 3] to logits
  [N, h, w, K] at its input size. Windows run one at a time in a `tf.while_loop` (bounded memory,
  and H, W may be unknown when traced); each window's logits are added to a zero canvas and the
  canvas divided by how many windows covered each pixel. The first window runs before the loop so
  the canvas takes its class count from the model. `unroll`: the same windows, in the same order,
  as a fixed sequence of static slices and pads (H, W must be static), for converters that handle
  neither loops nor tf.roll (TFLite, ONNX).
  """
  window_h, window_w = (window, window) if isinstance(window, int) else window
  if unroll:
    return _unrolled_sliding_window_logits(model_fn, images, window_h, window_w)
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  win_h, stride_h, count_h = _window_offsets(height, window_h)
  win_w, stride_w, count_w = _window_offsets(width, window_w)

  def window_logits(index):
    """Logits of window `index` (row-major) placed on a zero canvas, and its 0/1 coverage.

    The window is padded at the bottom/right to the canvas size, then rolled to its offset
    (exact: a window never crosses the canvas edge). Both pad amounts and the crop size depend
    only on shapes, so XLA sees them as compile-time constants; only the offsets change per window.
    """
    offset_y = tf.minimum(index // count_w * stride_h, height - win_h)
    offset_x = tf.minimum(index % count_w * stride_w, width - win_w)
    crop = tf.slice(images, [0, offset_y, offset_x, 0], [-1, win_h, win_w, -1])
    logits = tf.cast(model_fn(crop), tf.float32)  # [N, win_h, win_w, K]
    padding = [[0, height - win_h], [0, width - win_w]]
    placed = tf.roll(tf.pad(logits, [[0, 0]] + padding + [[0, 0]]), [offset_y, offset_x],
                     axis=[1, 2])  # [N, H, W, K]
    placed.set_shape(images.shape[:3].concatenate(logits.shape[-1:]))
    covered = tf.roll(tf.pad(tf.ones([win_h, win_w]), padding), [offset_y, offset_x], axis=[0, 1])
    return placed, covered  # [N, H, W, K], [H, W]

  def body(index, logit_sum, visits):
    placed, covered = window_logits(index)
    return index + 1, logit_sum + placed, visits + covered

  _, logit_sum, visits = tf.while_loop(
      lambda index, *_: index < count_h * count_w, body,
      (tf.constant(1), *window_logits(tf.constant(0))), parallel_iterations=1)
  return logit_sum / visits[None, :, :, None]


def _static_offsets(length, window):
  """(window, offsets) along one side of static `length`: `_window_offsets` in Python ints."""
  window = min(window, length)
  stride = max(2 * window // 3, 1)
  count = (length - window + stride - 1) // stride + 1
  return window, [min(index * stride, length - window) for index in range(count)]


def _unrolled_sliding_window_logits(model_fn, images, window_h, window_w):
  """`sliding_window_logits` with the windows known when traced: each is a static slice, its
  logits padded onto the canvas, summed row by row as the loop does; the coverage is a constant."""
  height, width = images.shape[1], images.shape[2]
  if height is None or width is None:
    raise ValueError(f"an unrolled sliding window needs a static image size, got {images.shape}")
  win_h, offsets_y = _static_offsets(height, window_h)
  win_w, offsets_x = _static_offsets(width, window_w)
  logit_sum, visits = None, np.zeros([height, width], np.float32)
  for offset_y in offsets_y:
    for offset_x in offsets_x:
      crop = images[:, offset_y:offset_y + win_h, offset_x:offset_x + win_w]
      logits = tf.cast(model_fn(crop), tf.float32)  # [N, win_h, win_w, K]
      placed = tf.pad(logits, [[0, 0], [offset_y, height - offset_y - win_h],
                               [offset_x, width - offset_x - win_w], [0, 0]])  # [N, H, W, K]
      logit_sum = placed if logit_sum is None else logit_sum + placed
      visits[offset_y:offset_y + win_h, offset_x:offset_x + win_w] += 1.0
  return logit_sum / visits[None, :, :, None]


def multi_scale_logits(model_fn, images, scales=SS_SCALES, flip=False, window=None,
                       unroll_window=False):
  """The original's `inference_with_multi_scales`: raw logits averaged over scales (and flips).

  images: float32 [N, H, W, 3] normalised; returns float32 logits [N, H, W, K]. With `window` (int
  or (height, width)), each scale runs by sliding window, the window clipped to the scaled size;
  `unroll_window` unrolls it (`sliding_window_logits`), for images of static size.
  """
  if not scales:
    raise ValueError("scales must not be empty")
  size = spatial_size(images)

  def run(inputs):
    if window is None:
      return tf.cast(model_fn(inputs), tf.float32)
    return sliding_window_logits(model_fn, inputs, window, unroll_window)

  # The mirrored images ride in the same batch: half the model calls to trace, same arithmetic
  # (inference is per sample).
  inputs = tf.concat([images, tf.reverse(images, [2])], 0) if flip else images  # [N or 2N, H, W, 3]
  total = None
  for scale in scales:
    if scale == 1.0:
      logits = run(inputs)
    else:
      logits = resize(run(resize(inputs, [scaled_size(side, scale) for side in size])), size)
    total = logits if total is None else total + logits
  if flip:
    direct, mirrored = tf.split(total, 2)  # [2N, H, W, K] -> 2 x [N, H, W, K]
    total = direct + tf.reverse(mirrored, [2])
  return total / float(len(scales) * (2 if flip else 1))



def model_logits(model, images, scales=SS_SCALES, flip=False, window=None, unroll_window=False):
  """`multi_scale_logits` of a Keras segmentation `model` run for inference (training=False).

  images: float32 [N, H, W, 3] normalised; returns float32 logits [N, H, W, K].
  """
  return multi_scale_logits(lambda x: model(x, training=False), images, scales, flip, window,
                            unroll_window)


def class_map(logits):
  """The predicted class of every pixel: logits [N, H, W, K] -> int32 [N, H, W] (argmax)."""
  return tf.argmax(logits, -1, output_type=tf.int32)
