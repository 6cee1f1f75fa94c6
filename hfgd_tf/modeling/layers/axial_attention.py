"""Multi-head axial attention: the layer HFGM puts before the reused class kernels."""

import keras
import tensorflow as tf

from hfgd_tf.modeling.layers.common import shared_initializer

# Batched-matmul layouts of a [N, H, W, heads, d] tensor: one H x H map per column (height pass)
# or one W x W map per row (width pass).
_COLUMNS = [0, 2, 3, 1, 4]  # [N, H, W, heads, d] -> [N, W, heads, H, d]
_ROWS = [0, 1, 3, 2, 4]  # [N, H, W, heads, d] -> [N, H, heads, W, d]


@keras.saving.register_keras_serializable("hfgd_tf")
class AxialAttention(keras.layers.Layer):
  """Multi-head axial attention along height, then width (Ho et al. 2019; iSeg's layer).

  q, k and v are 1x1 convolutions (with bias) of the input to C channels, split into `num_heads`
  heads of d = C / num_heads channels, head-major (channel = head * d + c); the q and k kernels
  start from the same Glorot sample (iSeg's `shared_qk_weights=True` under the Keras 2 of the
  HFGD era; iSeg's Keras 3 code draws them apart) and train apart. Both attention maps
  come from the same q and k:
    height map  A_H[n, w, i, j] = softmax_j(q[n, i, w] . k[n, j, w] / sqrt(d))   (per column)
    width map   A_W[n, h, a, b] = softmax_b(q[n, h, a] . k[n, h, b] / sqrt(d))   (per row)
  and are applied in sequence: x = A_H v, out = A_W x, so each output pixel sees the whole image.
  Softmaxes run in float32. No positional encoding, output projection, norm or residual (HFGM adds
  the residual).

  The output interleaves the heads as the original does (channel = c * heads + head: it transposes
  to [N, H, W, d, heads] before merging). That is not a permutation v's projection can absorb, so
  it is kept exactly: weights trained by the original give the original's outputs.

  1/sqrt(d) is folded into the query projection's kernel and bias ((s q) . k = s (q . k)), which
  scales C^2 + C weights instead of every entry of the H^3 + W^3 per-head maps.

  Input [N, H, W, C] -> output [N, H, W, C].
  """

  # iSeg creates the projections in build(), after its L2 was set: never penalised
  # (--weight_decay_scope=original, hfgd_tf/optimization.py).
  original_late_sublayers = ("query_conv", "key_conv", "value_conv")

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
    shared = shared_initializer()  # q and k start equal
    self.query_conv = keras.layers.Conv2D(channels, 1, kernel_initializer=shared, name="query",
                                          dtype=self.dtype_policy)
    self.key_conv = keras.layers.Conv2D(channels, 1, kernel_initializer=shared, name="key",
                                        dtype=self.dtype_policy)
    self.value_conv = keras.layers.Conv2D(channels, 1, name="value", dtype=self.dtype_policy)
    for conv in (self.query_conv, self.key_conv, self.value_conv):
      conv.build(input_shape)

  def _project(self, conv, inputs, scale=1.0):
    """`conv`'s 1x1 projection of inputs [N, H, W, C], times `scale`, as [N, H, W, heads, d]."""
    kernel = tf.cast(conv.kernel * scale, inputs.dtype)
    bias = tf.cast(conv.bias * scale, inputs.dtype)
    x = tf.nn.conv2d(inputs, kernel, strides=1, padding="VALID") + bias
    shape = tf.shape(inputs)
    return tf.reshape(x, [shape[0], shape[1], shape[2], self.num_heads, self.head_channels])

  @staticmethod
  def _attention_map(query, key):
    """softmax(q k^T) over the last axis, in float32: [..., L, d] x [..., L, d] -> [..., L, L]."""
    energy = tf.linalg.matmul(query, key, transpose_b=True)
    return tf.cast(tf.nn.softmax(tf.cast(energy, tf.float32), axis=-1), query.dtype)

  def call(self, inputs):
    query = self._project(self.query_conv, inputs, self.head_channels ** -0.5)
    key = self._project(self.key_conv, inputs)
    value = self._project(self.value_conv, inputs)
    # Height pass, one H x H map per column: [N, W, heads, H, d].
    height_map = self._attention_map(tf.transpose(query, _COLUMNS), tf.transpose(key, _COLUMNS))
    x = tf.linalg.matmul(height_map, tf.transpose(value, _COLUMNS))
    # Width pass, one W x W map per row: [N, H, heads, W, d].
    width_map = self._attention_map(tf.transpose(query, _ROWS), tf.transpose(key, _ROWS))
    x = tf.linalg.matmul(width_map, tf.transpose(x, [0, 3, 2, 1, 4]))
    # Heads interleaved: [N, H, heads, W, d] -> [N, H, W, d, heads] -> [N, H, W, d * heads].
    x = tf.transpose(x, [0, 1, 3, 4, 2])
    shape = tf.shape(inputs)
    return tf.reshape(x, [shape[0], shape[1], shape[2], self.channels])

  def compute_output_shape(self, input_shape):
    return tuple(input_shape)

  def get_config(self):
    config = super().get_config()
    config.update(num_heads=self.num_heads)
    return config
