"""Full (non-local) self-attention, as the original CAR/NL head uses it."""

import keras
import tensorflow as tf

from hfgd_tf.modeling.layers.common import shared_initializer


@keras.saving.register_keras_serializable("hfgd_tf")
class SelfAttention(keras.layers.Layer):
  """Non-local self-attention over all H*W positions; the caller adds the residual.

  q and k are separate 1x1 convolutions (with bias) to `key_filters` channels whose kernels start
  from the same Glorot sample and then train independently (the original's
  `shared_querykey_weights=True`); v is a 1x1 convolution to `value_filters`. The attention is
  softmax over keys of Q K^T with no 1/sqrt(d) scale, computed in float32; no output projection,
  no norm.

  Input [N, H, W, C] -> output [N, H, W, value_filters].
  """

  def __init__(self, key_filters=64, value_filters=512, **kwargs):
    super().__init__(**kwargs)
    self.key_filters = key_filters
    self.value_filters = value_filters
    shared = shared_initializer()  # q and k start equal
    self.query_conv = keras.layers.Conv2D(key_filters, 1, kernel_initializer=shared, name="query",
                                          dtype=self.dtype_policy)
    self.key_conv = keras.layers.Conv2D(key_filters, 1, kernel_initializer=shared, name="key",
                                        dtype=self.dtype_policy)
    self.value_conv = keras.layers.Conv2D(value_filters, 1, name="value", dtype=self.dtype_policy)

  def build(self, input_shape):
    for conv in (self.query_conv, self.key_conv, self.value_conv):
      conv.build(input_shape)

  def call(self, inputs):
    batch = tf.shape(inputs)[0]
    height, width = tf.shape(inputs)[1], tf.shape(inputs)[2]
    # [N, H, W, C] -> [N, HW, C]
    query = tf.reshape(self.query_conv(inputs), [batch, -1, self.key_filters])
    key = tf.reshape(self.key_conv(inputs), [batch, -1, self.key_filters])
    value = tf.reshape(self.value_conv(inputs), [batch, -1, self.value_filters])
    energy = tf.linalg.matmul(query, key, transpose_b=True)  # [N, HW(query), HW(key)]
    attention = tf.nn.softmax(tf.cast(energy, tf.float32), axis=-1)
    out = tf.linalg.matmul(tf.cast(attention, value.dtype), value)  # [N, HW, value_filters]
    return tf.reshape(out, [batch, height, width, self.value_filters])

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.value_filters,)

  def get_config(self):
    config = super().get_config()
    config.update(key_filters=self.key_filters, value_filters=self.value_filters)
    return config
