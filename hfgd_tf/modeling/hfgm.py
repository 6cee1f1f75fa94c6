"""HFGM, the high-level feature guided module (paper Sec. 3.1).

Two things make the decoder *guided* rather than merely attached:
  1. protection: every input of the upsampling decoder (the OS=4/8/16 backbone features and the
     CAE output on top) passes through a stop-gradient, so the randomly initialised decoder never
     updates the backbone or CAE (`protect`);
  2. guidance: the decoder's features are classified by the CAE's classifier weights, the *class
     kernels*, under stop-gradient (kernel and bias), so the decoder learns to produce features the
     OS=32 classifier understands while the class kernels are trained only by the OS=32 path. The
     classifier layer itself is never called here: that would let gradients reach it.
An axial-attention layer with a residual (Table 2) sits before the class kernels and spreads each
pixel's guidance signal over the whole image.
"""

import keras
import tensorflow as tf

from hfgd_tf.modeling.layers.axial_attention import AxialAttention


def protect(tensors):
  """Stop-gradient on every tensor of a (nested) structure: the HFGM's OS=n path protection."""
  return tf.nest.map_structure(tf.stop_gradient, tensors)


@keras.saving.register_keras_serializable("hfgd_tf")
class HFGM(keras.layers.Layer):
  """call(features, classifier) -> logits [N, h, w, K] of the decoder features [N, h, w, C].

  `classifier` is the CAE's 1x1 Conv2D (kernel [1, 1, C, K], bias [K]); only its weights are read.
  """

  def __init__(self, use_axial_attention=True, num_heads=4, **kwargs):
    super().__init__(**kwargs)
    self.use_axial_attention = use_axial_attention
    self.num_heads = num_heads
    self.axial_attention = (AxialAttention(num_heads, name="axial_attention",
                                           dtype=self.dtype_policy)
                            if use_axial_attention else None)

  def call(self, features, classifier):
    if self.axial_attention is not None:
      features = features + self.axial_attention(features)
    kernel = tf.stop_gradient(tf.cast(classifier.kernel, features.dtype))
    bias = tf.stop_gradient(tf.cast(classifier.bias, features.dtype))
    return tf.nn.conv2d(features, kernel, strides=1, padding="SAME") + bias

  def get_config(self):
    config = super().get_config()
    config.update(use_axial_attention=self.use_axial_attention, num_heads=self.num_heads)
    return config
