"""The CAR paper's non-local (self-attention) head: "Self-Attention" of Table 1 and, with CAR,
"SA + CAR", the D8 baseline of Table 5."""

import keras

from hfgd_tf.modeling.car import ClassAwareRegularization, car_norm_kwargs
from hfgd_tf.modeling.layers.common import ConvNormAct
from hfgd_tf.modeling.layers.self_attention import SelfAttention


@keras.saving.register_keras_serializable("hfgd_tf")
class NonLocalEncoder(keras.layers.Layer):
  """The CAR paper's NL head: 3x3 conv-BN-ReLU to 512, x + SA(x), then either CAR (512, with its
  1x1 end conv; "SA + CAR", the D8 baseline of Table 5) or a 3x3 conv-BN-ReLU ("Self-Attention"
  of Table 1)."""

  def __init__(self, filters=512, use_car=False, car=None, norm=None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.use_car = use_car
    self.car_args = dict(car or {})
    self.norm = dict(norm or {})
    policy = self.dtype_policy
    self.down_conv = ConvNormAct(filters, 3, name="down_conv", dtype=policy, **self.norm)
    self.attention = SelfAttention(64, filters, name="self_attention", dtype=policy)
    if use_car:
      self.car = ClassAwareRegularization(filters=filters, apply_convs=True, name="car",
                                          dtype=policy, **self.car_args,
                                          **car_norm_kwargs(self.norm))
    else:
      self.end_conv = ConvNormAct(filters, 3, name="end_conv", dtype=policy, **self.norm)

  def call(self, inputs, labels=None, training=None):
    x = self.down_conv(inputs, training=training)
    x = x + self.attention(x)
    if self.use_car:
      x, losses = self.car(x, labels=labels, training=training)
    else:
      x, losses = self.end_conv(x, training=training), {}
    return {"features": x, "losses": losses}

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, use_car=self.use_car, car=self.car_args, norm=self.norm)
    return config
