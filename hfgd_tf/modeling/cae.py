"""CAE, the context-augmented encoder (paper Sec. 3.2).

Like every encoder (hfgd_tf/modeling/encoders.py), it works on the backbone's deepest features and
returns {"features": [N, h, w, C_out], "losses": {name: scalar}}; CAE's features are 256-D, the
input of the class kernels, and its losses are CAR's.
"""

import keras

from hfgd_tf.modeling.car import ClassAwareRegularization, car_norm_kwargs
from hfgd_tf.modeling.layers.common import ConvNormAct
from hfgd_tf.modeling.layers.self_attention import SelfAttention


@keras.saving.register_keras_serializable("hfgd_tf")
class ContextAugmentedEncoder(keras.layers.Layer):
  """CAE (ours): two leading conv-BN-ReLU to 512-D, full self-attention with a residual, CAR on
  the result, and a trailing 1x1 conv-BN-ReLU to the decoder width.

  With `car_filters` equal to `output_filters` the trailing conv is CAR's own end conv (our
  reading of the paper, reference 10.5.1); otherwise CAR keeps its width and a separate 1x1
  conv-BN-ReLU brings it to `output_filters`.
  """

  def __init__(self, filters=512, kernel_size=1, car_filters=256, output_filters=256,
               car=None, norm=None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.kernel_size = kernel_size
    self.car_filters = car_filters
    self.output_filters = output_filters
    self.car_args = dict(car or {})
    self.norm = dict(norm or {})
    policy = self.dtype_policy
    self.leading_convs = [
        ConvNormAct(filters, kernel_size, name=f"leading_conv{i}", dtype=policy, **self.norm)
        for i in (1, 2)]
    self.attention = SelfAttention(64, filters, name="self_attention", dtype=policy)
    self.car = ClassAwareRegularization(filters=car_filters, apply_convs=True, name="car",
                                        dtype=policy, **self.car_args,
                                        **car_norm_kwargs(self.norm))
    self.trailing_conv = (ConvNormAct(output_filters, 1, name="trailing_conv", dtype=policy,
                                      **self.norm)
                          if car_filters != output_filters else None)

  def call(self, inputs, labels=None, training=None):
    x = inputs
    for conv in self.leading_convs:
      x = conv(x, training=training)
    x = x + self.attention(x)
    x, losses = self.car(x, labels=labels, training=training)
    if self.trailing_conv is not None:
      x = self.trailing_conv(x, training=training)
    return {"features": x, "losses": losses}

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, kernel_size=self.kernel_size,
                  car_filters=self.car_filters, output_filters=self.output_filters,
                  car=self.car_args, norm=self.norm)
    return config
