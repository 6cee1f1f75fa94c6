"""Building blocks shared by every head: conv + norm + activation, batch norm, resizing, drop path."""

import keras
import tensorflow as tf

# Head batch-norm defaults of the original codebase: momentum 0.9997 (paper, Sec. 4) and Keras'
# default epsilon 1e-3, which the original never overrode for heads.
BN_MOMENTUM = 0.9997
HEAD_BN_EPSILON = 1e-3


def batch_norm(sync=False, momentum=BN_MOMENTUM, epsilon=HEAD_BN_EPSILON, name=None):
  """Batch normalization, synchronized across replicas when `sync`.

  Keras computes the moments in float32 under mixed precision, so statistics stay float32.
  `sync` all-reduces the per-replica sums, giving one-device statistics on the global batch; use it
  only with more than one replica (it costs an all-reduce per layer).
  """
  return keras.layers.BatchNormalization(
      momentum=momentum, epsilon=epsilon, synchronized=sync, name=name)


@keras.saving.register_keras_serializable("hfgd_tf")
class ConvNormAct(keras.layers.Layer):
  """Conv2D (no bias, "same" padding, Glorot init) -> BatchNorm -> activation.

  The original's `ConvBnRelu`; its default kernel size is 1.
  """

  def __init__(self, filters, kernel_size=1, strides=1, dilation_rate=1, activation="relu",
               sync_batch_norm=False, bn_momentum=BN_MOMENTUM, bn_epsilon=HEAD_BN_EPSILON,
               **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.kernel_size = kernel_size
    self.strides = strides
    self.dilation_rate = dilation_rate
    self.activation_name = activation
    self.sync_batch_norm = sync_batch_norm
    self.bn_momentum = bn_momentum
    self.bn_epsilon = bn_epsilon
    self.conv = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, dilation_rate=dilation_rate, padding="same",
        use_bias=False, kernel_initializer="glorot_uniform", name="conv", dtype=self.dtype_policy)
    self.norm = keras.layers.BatchNormalization(
        momentum=bn_momentum, epsilon=bn_epsilon, synchronized=sync_batch_norm, name="bn",
        dtype=self.dtype_policy)
    self.act = keras.layers.Activation(activation, dtype=self.dtype_policy) if activation else None

  def build(self, input_shape):
    self.conv.build(input_shape)
    self.norm.build(self.conv.compute_output_shape(input_shape))

  def call(self, inputs, training=None):
    x = self.norm(self.conv(inputs), training=training)
    return self.act(x) if self.act is not None else x

  def compute_output_shape(self, input_shape):
    return self.conv.compute_output_shape(input_shape)

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                  dilation_rate=self.dilation_rate, activation=self.activation_name,
                  sync_batch_norm=self.sync_batch_norm, bn_momentum=self.bn_momentum,
                  bn_epsilon=self.bn_epsilon)
    return config


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


@keras.saving.register_keras_serializable("hfgd_tf")
class Resize(keras.layers.Layer):
  """Resizes its first input to the spatial size of its second input (or to a given size)."""

  def __init__(self, align_corners=True, method="bilinear", **kwargs):
    super().__init__(**kwargs)
    self.align_corners = align_corners
    self.method = method

  def call(self, inputs, target):
    size = target if isinstance(target, (tuple, list)) else spatial_size(target)
    return resize(inputs, size, self.align_corners, self.method)

  def get_config(self):
    config = super().get_config()
    config.update(align_corners=self.align_corners, method=self.method)
    return config


@keras.saving.register_keras_serializable("hfgd_tf")
class DropPath(keras.layers.Layer):
  """Stochastic depth: drops a residual branch per sample with probability `rate` in training.

  Kept samples are scaled by 1/(1-rate) so the expectation is unchanged; identity at inference.
  """

  def __init__(self, rate=0.0, **kwargs):
    super().__init__(**kwargs)
    self.rate = rate
    self.seed_generator = keras.random.SeedGenerator(0) if rate > 0 else None

  def call(self, inputs, training=None):
    if not training or self.rate == 0.0:
      return inputs
    keep = 1.0 - self.rate
    shape = (tf.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
    mask = tf.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype))
    return inputs / keep * mask

  def get_config(self):
    config = super().get_config()
    config.update(rate=self.rate)
    return config
