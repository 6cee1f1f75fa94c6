"""Building blocks shared by every head: conv + batch norm + activation, and drop path."""

import random

import keras
import tensorflow as tf

from hfgd_tf.config import BN_MOMENTUM, HEAD_BN_EPSILON


def shared_initializer():
  """One Glorot-uniform initializer with its own fixed seed: every kernel it initialises gets the
  same values (the original's SharedInitializer, which q and k kernels share).

  The seed is drawn from Python's RNG (keras.utils.set_random_seed seeds it), so each call gives
  a new sample. The values come from the seed alone, so the kernels start equal however Keras
  builds the layers: also in a symbolic build under a StatelessScope, which would discard an
  assign done in build().
  """
  return keras.initializers.GlorotUniform(seed=random.randint(1, 10 ** 9))


def norm_kwargs(config):
  """The batch-norm arguments every head layer takes, from the model config."""
  return dict(sync_batch_norm=config.sync_batch_norm, bn_momentum=config.bn_momentum,
              bn_epsilon=config.head_bn_epsilon)


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
    # The seed Keras' TF backend would use for `keras.random.uniform(seed=self.seed_generator)`.
    seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), tf.int32)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
      # The generator's state is mirrored (every replica draws the same seeds): fold in which
      # replica this is, so each drops other samples. One replica keeps the generator's masks.
      seed = tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)
    noise = tf.random.stateless_uniform(shape, seed=seed, dtype=inputs.dtype)
    mask = tf.floor(keep + noise)
    return inputs / keep * mask

  def get_config(self):
    config = super().get_config()
    config.update(rate=self.rate)
    return config
