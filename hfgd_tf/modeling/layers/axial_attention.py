"""Multi-head axial attention: the layer HFGM puts before the reused class kernels."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable("hfgd_tf")
class AxialAttention(keras.layers.Layer):
  """Multi-head axial attention along height, then width (Ho et al. 2019; iSeg's layer).

  q, k and v are 1x1 convolutions (with bias) of the input to C channels, split into `num_heads`
  heads of d = C / num_heads channels. Both attention maps come from the same q and k:
    height map  A_H[n, w, i, j] = softmax_j(q[n, i, w] . k[n, j, w] / sqrt(d))   (per column)
    width map   A_W[n, h, a, b] = softmax_b(q[n, h, a] . k[n, h, b] / sqrt(d))   (per row)
  and are applied in sequence: x = A_H v, out = A_W x, so each output pixel sees the whole image.
  Softmaxes run in float32. No positional encoding, output projection, norm or residual (HFGM adds
  the residual).

  Heads are concatenated head-major (channel = head * d + c). The original interleaves them
  (channel = c * heads + head); that is a fixed permutation of v's output channels, which the
  learned v projection absorbs, so both span the same functions.

  Input [N, H, W, C] -> output [N, H, W, C].
  """

  def __init__(self, num_heads=4, **kwargs):
    super().__init__(**kwargs)
    self.num_heads = num_heads

  def build(self, input_shape):
    channels = input_shape[-1]
    if channels % self.num_heads:
      raise ValueError(f"axial attention: {channels} channels do not split into "
                       f"{self.num_heads} heads")
    self.channels = channels
    self.head_channels = channels // self.num_heads
    self.query_conv = keras.layers.Conv2D(channels, 1, name="query", dtype=self.dtype_policy)
    self.key_conv = keras.layers.Conv2D(channels, 1, name="key", dtype=self.dtype_policy)
    self.value_conv = keras.layers.Conv2D(channels, 1, name="value", dtype=self.dtype_policy)
    for conv in (self.query_conv, self.key_conv, self.value_conv):
      conv.build(input_shape)

  def _split_heads(self, x):
    # [N, H, W, C] -> [N, heads, H, W, d]
    shape = tf.shape(x)
    x = tf.reshape(x, [shape[0], shape[1], shape[2], self.num_heads, self.head_channels])
    return tf.transpose(x, [0, 3, 1, 2, 4])

  def _attend(self, query, key, value):
    """softmax(q k^T / sqrt(d)) v over the second-to-last axis of [..., L, d] tensors."""
    energy = tf.linalg.matmul(query, key, transpose_b=True)  # [..., L, L]
    energy = tf.cast(energy, tf.float32) * (self.head_channels ** -0.5)
    attention = tf.cast(tf.nn.softmax(energy, axis=-1), value.dtype)
    return tf.linalg.matmul(attention, value)

  def call(self, inputs):
    query = self._split_heads(self.query_conv(inputs))
    key = self._split_heads(self.key_conv(inputs))
    value = self._split_heads(self.value_conv(inputs))
    # Along height: one H x H map per column -> put W before H: [N, heads, W, H, d].
    columns = [0, 1, 3, 2, 4]
    x = self._attend(tf.transpose(query, columns), tf.transpose(key, columns),
                     tf.transpose(value, columns))
    # Along width: one W x W map per row, on [N, heads, H, W, d].
    x = self._attend(query, key, tf.transpose(x, columns))
    # [N, heads, H, W, d] -> [N, H, W, heads * d]
    x = tf.transpose(x, [0, 2, 3, 1, 4])
    shape = tf.shape(inputs)
    return tf.reshape(x, [shape[0], shape[1], shape[2], self.channels])

  def compute_output_shape(self, input_shape):
    return tuple(input_shape)

  def get_config(self):
    config = super().get_config()
    config.update(num_heads=self.num_heads)
    return config
