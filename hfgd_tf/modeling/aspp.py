"""ASPP (DeepLabv3) and the ASPP encoder, one of the CAE alternatives of Table 1."""

import keras
import tensorflow as tf

from hfgd_tf.modeling.layers.common import ConvNormAct


@keras.saving.register_keras_serializable("hfgd_tf")
class ASPP(keras.layers.Layer):
  """Image pooling + 1x1 + three dilated 3x3 branches of `filters` each, concatenated.

  Dilation rates are (3, 6, 9) at OS=32 and scale as 32/OS (12, 24, 36 at OS=8), as in the
  original CAR DeepLab head. Input [N, H, W, C] -> [N, H, W, 5 * filters].
  """

  def __init__(self, filters=256, output_stride=32, norm=None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.output_stride = output_stride
    self.norm = dict(norm or {})
    rates = [rate * 32 // output_stride for rate in (3, 6, 9)]
    policy = self.dtype_policy
    self.pool_conv = ConvNormAct(filters, 1, name="pool_conv", dtype=policy, **self.norm)
    self.branches = [ConvNormAct(filters, 1, name="conv1x1", dtype=policy, **self.norm)] + [
        ConvNormAct(filters, 3, dilation_rate=rate, name=f"conv3x3_rate{rate}", dtype=policy,
                    **self.norm) for rate in rates]

  def call(self, inputs, training=None):
    pooled = tf.reduce_mean(inputs, axis=[1, 2], keepdims=True)  # [N, 1, 1, C]
    pooled = self.pool_conv(pooled, training=training)
    shape = tf.shape(inputs)
    pooled = tf.broadcast_to(pooled, [shape[0], shape[1], shape[2], self.filters])
    outputs = [pooled] + [branch(inputs, training=training) for branch in self.branches]
    return tf.concat(outputs, axis=-1)

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, output_stride=self.output_stride, norm=self.norm)
    return config


@keras.saving.register_keras_serializable("hfgd_tf")
class ASPPEncoder(keras.layers.Layer):
  """ASPP (256 per branch) followed by a 1x1 conv-BN-ReLU to 256, as the CAR DeepLab head."""

  def __init__(self, filters=256, output_stride=32, norm=None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.output_stride = output_stride
    self.norm = dict(norm or {})
    self.aspp = ASPP(filters, output_stride, self.norm, name="aspp", dtype=self.dtype_policy)
    self.end_conv = ConvNormAct(filters, 1, name="end_conv", dtype=self.dtype_policy,
                                **self.norm)

  def call(self, inputs, labels=None, training=None):
    del labels  # no label-aware losses
    x = self.end_conv(self.aspp(inputs, training=training), training=training)
    return {"features": x, "losses": {}}

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, output_stride=self.output_stride, norm=self.norm)
    return config
