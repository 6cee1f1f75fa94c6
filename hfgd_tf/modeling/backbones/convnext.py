"""ConvNeXt T/S/B/L/XL (Liu et al., 2022), channels-last, as in the original codebase (§8.3).

  stem:        4x4 s4 conv (bias) -> LayerNorm
  downsample:  LayerNorm -> 2x2 s2 conv (bias), before stages 2-4
  block:       7x7 depthwise conv -> LayerNorm -> Dense 4C -> GELU (exact, erf) [-> GRN, V2]
               -> Dense C [-> layer scale, V1] -> drop path -> + input
All LayerNorms use epsilon 1e-6. The 7x7 depthwise conv is a `DepthwiseConv2D`: a grouped `Conv2D`
(as in keras.applications) is routed through XLA by Keras' TF backend and is ~50x slower on CPU.

Any input size works: the stem and downsamplers use TF "same" padding, so each level has
ceil(H / stride) rows (513 -> 129, 65, 33, 17). TF "same" puts floor(pad/2) before and ceil(pad/2)
after, so the 2x2 s2 downsamplers pad only bottom/right (one row/column on odd sizes) and the stem
pads (1 top/left, 2 bottom/right) at 513; inputs that are multiples of 32 are not padded at all.

Endpoints 4, 8, 16, 32 are the raw stage outputs (no extra norm). Drop-path rates grow linearly
from 0 to `drop_path_rate` over all blocks; defaults T 0.1, S 0.4, B 0.5 (the official ImageNet
recipes), L 0.3 (the original codebase), XL 0.4 (the original codebase).
"""

import dataclasses
from typing import Optional, Tuple

import keras
import tensorflow as tf

from hfgd_tf.config import BN_MOMENTUM
from hfgd_tf.modeling.backbones import check_output_stride_32, register_configs
from hfgd_tf.modeling.backbones.stages import build_four_stages
from hfgd_tf.modeling.layers.common import DropPath

LN_EPSILON = 1e-6
LAYER_SCALE_INIT = 1e-6


@dataclasses.dataclass(frozen=True)
class ConvNeXtConfig:
  depths: Tuple[int, int, int, int]
  widths: Tuple[int, int, int, int]
  drop_path_rate: float
  grn: bool = False  # ConvNeXtV2: global response normalization after GELU
  layer_scale_init: Optional[float] = LAYER_SCALE_INIT  # None: no layer scale (V2)


CONFIGS = {
    "convnext_tiny": ConvNeXtConfig((3, 3, 9, 3), (96, 192, 384, 768), 0.1),
    "convnext_small": ConvNeXtConfig((3, 3, 27, 3), (96, 192, 384, 768), 0.4),
    "convnext_base": ConvNeXtConfig((3, 3, 27, 3), (128, 256, 512, 1024), 0.5),
    "convnext_large": ConvNeXtConfig((3, 3, 27, 3), (192, 384, 768, 1536), 0.3),
    "convnext_xlarge": ConvNeXtConfig((3, 3, 27, 3), (256, 512, 1024, 2048), 0.4),
}


@keras.saving.register_keras_serializable("hfgd_tf")
class LayerScale(keras.layers.Layer):
  """Multiplies by a learned per-channel scale `gamma`, initialised to `init_value` (CaiT)."""

  def __init__(self, init_value=LAYER_SCALE_INIT, **kwargs):
    super().__init__(**kwargs)
    self.init_value = init_value

  def build(self, input_shape):
    self.gamma = self.add_weight(
        name="gamma", shape=(input_shape[-1],),
        initializer=keras.initializers.Constant(self.init_value))

  def call(self, inputs):
    return inputs * tf.cast(self.gamma, inputs.dtype)

  def get_config(self):
    config = super().get_config()
    config.update(init_value=self.init_value)
    return config


@keras.saving.register_keras_serializable("hfgd_tf")
class GlobalResponseNorm(keras.layers.Layer):
  """ConvNeXtV2's GRN on NHWC inputs, computed in float32 whatever the compute dtype.

  gx = ||x||_2 over (H, W) per channel; nx = gx / (mean_c gx + eps); out = gamma*(x*nx) + beta + x,
  with gamma and beta initialised to zero so a fresh GRN is the identity.
  """

  def __init__(self, epsilon=1e-6, **kwargs):
    super().__init__(**kwargs)
    self.epsilon = epsilon

  def build(self, input_shape):
    channels = input_shape[-1]
    self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="zeros")
    self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

  def call(self, inputs):
    x = tf.cast(inputs, tf.float32)
    gx = tf.norm(x, ord="euclidean", axis=(1, 2), keepdims=True)  # [N, 1, 1, C]
    nx = gx / (tf.reduce_mean(gx, axis=-1, keepdims=True) + self.epsilon)
    gamma = tf.cast(self.gamma, tf.float32)
    beta = tf.cast(self.beta, tf.float32)
    return tf.cast(gamma * (x * nx) + beta + x, inputs.dtype)

  def get_config(self):
    config = super().get_config()
    config.update(epsilon=self.epsilon)
    return config


def _layer_norm(name):
  return keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=name)


def convnext_block(x, name, drop_path_rate, grn=False, layer_scale_init=LAYER_SCALE_INIT):
  """One ConvNeXt (V1: layer scale) or ConvNeXtV2 (grn=True, layer_scale_init=None) block."""
  channels = x.shape[-1]
  y = keras.layers.DepthwiseConv2D(7, padding="same", name=f"{name}_dwconv")(x)
  y = _layer_norm(f"{name}_norm")(y)
  y = keras.layers.Dense(4 * channels, name=f"{name}_pwconv1")(y)
  # Keras' "gelu" is the exact (erf) one.
  y = keras.layers.Activation("gelu", name=f"{name}_gelu")(y)
  if grn:
    y = GlobalResponseNorm(name=f"{name}_grn")(y)
  y = keras.layers.Dense(channels, name=f"{name}_pwconv2")(y)
  if layer_scale_init is not None:
    y = LayerScale(layer_scale_init, name=f"{name}_layer_scale")(y)
  if drop_path_rate > 0:
    y = DropPath(drop_path_rate, name=f"{name}_drop_path")(y)
  return keras.layers.Add(name=f"{name}_add")([x, y])


def build_convnext(config, output_stride=32, drop_path_rate=None, sync_batch_norm=False,
                   bn_momentum=BN_MOMENTUM, name=None):
  """Builds ConvNeXt(V2) of `config` as a functional model returning {4, 8, 16, 32: features}."""
  del sync_batch_norm, bn_momentum  # LayerNorm only
  check_output_stride_32(name, output_stride)

  def stem(images):
    x = keras.layers.Conv2D(config.widths[0], 4, strides=4, padding="same",
                            name="stem_conv")(images)
    return _layer_norm("stem_norm")(x)

  def downsample(x, stage):
    x = _layer_norm(f"downsample{stage}_norm")(x)
    return keras.layers.Conv2D(config.widths[stage - 1], 2, strides=2, padding="same",
                               name=f"downsample{stage}_conv")(x)

  def block(x, stage, number, rate):
    return convnext_block(x, f"stage{stage}_block{number}", rate, grn=config.grn,
                          layer_scale_init=config.layer_scale_init)

  return build_four_stages(stem, downsample, block, config.depths,
                           config.drop_path_rate if drop_path_rate is None else drop_path_rate,
                           name=name)


register_configs(CONFIGS, build_convnext)
