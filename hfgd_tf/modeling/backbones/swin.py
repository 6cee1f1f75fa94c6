"""Swin Transformer T/S/B/L (Liu et al., 2021) for dense prediction, any input size (§8.2).

  patch embed: zero-pad bottom/right to a multiple of 4 -> 4x4 s4 conv -> LayerNorm (patch norm)
  stage i:     blocks alternating regular / shifted (shift = window // 2) window attention, each
               x + DropPath(WindowAttention(LN(x))), then x + DropPath(MLP(LN(x)));
               the stage output (endpoint 4 * 2^i, no extra norm) is taken BEFORE patch merging
  merging:     zero-pad bottom/right to even -> concat of the 2x2 neighbours (official order
               (0,0), (1,0), (0,1), (1,1)) -> LayerNorm(4C) -> Dense 2C without bias
Window attention pads each block's (normed) input bottom/right to a multiple of the window, as the
official segmentation code does: padded tokens take part in attention like the original (only the
shifted-window regions are masked, with -100), and are cropped afterwards. LayerNorm eps 1e-5, qkv
bias, mlp ratio 4, no absolute position embedding, relative position bias table initialised to zero.
Attention uses `tf.linalg.matmul` (the TF profiler counts einsum as 0 FLOPs) and a float32 softmax.
Drop-path rates grow linearly from 0 to `drop_path_rate` over all blocks (default 0.3, the original
codebase's value for every Swin).
"""

import dataclasses
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

from hfgd_tf.config import BN_MOMENTUM
from hfgd_tf.modeling.backbones import check_output_stride_32, register_configs
from hfgd_tf.modeling.backbones.stages import build_four_stages
from hfgd_tf.modeling.layers.common import DropPath

LN_EPSILON = 1e-5
PATCH_SIZE = 4
MASK_VALUE = -100.0  # added to attention logits between different shifted-window regions


@dataclasses.dataclass(frozen=True)
class SwinConfig:
  embed_dim: int
  depths: Tuple[int, int, int, int]
  num_heads: Tuple[int, int, int, int]
  window_size: int
  drop_path_rate: float = 0.3
  mlp_ratio: float = 4.0


CONFIGS = {
    "swin_tiny_224": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "swin_small_224": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "swin_base_224": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), 7),
    "swin_base_384": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "swin_large_224": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), 7),
    "swin_large_384": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
}


def relative_position_index(window_size):
  """[N, N] index into the [(2w-1)^2, heads] bias table for each (query, key) pair of a window."""
  coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij"))
  coords = coords.reshape(2, -1)  # [2, N], row-major over (row, col)
  relative = coords[:, :, None] - coords[:, None, :] + (window_size - 1)  # [2, N, N]
  return relative[0] * (2 * window_size - 1) + relative[1]


def _pad_bottom_right(x, multiple):
  """Zero-pads NHWC `x` at the bottom/right so height and width are multiples of `multiple`."""
  height, width = tf.shape(x)[1], tf.shape(x)[2]
  pad_h = (multiple - height % multiple) % multiple
  pad_w = (multiple - width % multiple) % multiple
  return tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])


def _window_partition(x, window_size):
  """[B, H, W, C] (H, W multiples of the window) -> [B * nW, w*w, C]."""
  channels = x.shape[-1]
  height, width = tf.shape(x)[1], tf.shape(x)[2]
  x = tf.reshape(x, [-1, height // window_size, window_size, width // window_size, window_size,
                     channels])  # [B, H/w, w, W/w, w, C]
  x = tf.transpose(x, [0, 1, 3, 2, 4, 5])  # [B, H/w, W/w, w, w, C]
  return tf.reshape(x, [-1, window_size * window_size, channels])


def _window_reverse(windows, window_size, height, width):
  """[B * nW, w*w, C] -> [B, H, W, C]; inverse of `_window_partition`."""
  channels = windows.shape[-1]
  x = tf.reshape(windows, [-1, height // window_size, width // window_size, window_size,
                           window_size, channels])  # [B, H/w, W/w, w, w, C]
  x = tf.transpose(x, [0, 1, 3, 2, 4, 5])  # [B, H/w, w, W/w, w, C]
  return tf.reshape(x, [-1, height, width, channels])


def shifted_window_mask(height, width, window_size, shift_size):
  """[nW, N, N] additive mask: MASK_VALUE between tokens of different regions after the roll."""
  def region_ids(size):
    # Along one axis the rolled image splits into [0, size-w), [size-w, size-s), [size-s, size).
    positions = tf.range(size)
    return tf.where(positions < size - window_size, 0,
                    tf.where(positions < size - shift_size, 1, 2))
  ids = region_ids(height)[:, None] * 3 + region_ids(width)[None, :]  # [H, W]
  ids = _window_partition(ids[None, :, :, None], window_size)[..., 0]  # [nW, N]
  different = tf.not_equal(ids[:, :, None], ids[:, None, :])  # [nW, N, N]
  return tf.where(different, MASK_VALUE, 0.0)


@keras.saving.register_keras_serializable("hfgd_tf")
class WindowAttention(keras.layers.Layer):
  """(Shifted) window multi-head self-attention with relative position bias, on NHWC inputs.

  Pads to window multiples, rolls by -shift_size when shifting, attends within windows (masking
  across regions that the roll brought together), then reverses all of it. Sub-layers `qkv` and
  `proj` carry the layer's name as prefix so weight files can address them uniquely.
  """

  def __init__(self, num_heads, window_size, shift_size=0, **kwargs):
    super().__init__(**kwargs)
    self.num_heads = num_heads
    self.window_size = window_size
    self.shift_size = shift_size
    self.index = relative_position_index(window_size).reshape(-1)  # [N*N]

  def build(self, input_shape):
    channels = input_shape[-1]
    self.scale = (channels // self.num_heads) ** -0.5
    self.qkv = keras.layers.Dense(3 * channels, name=f"{self.name}_qkv", dtype=self.dtype_policy)
    self.qkv.build(input_shape)
    self.proj = keras.layers.Dense(channels, name=f"{self.name}_proj", dtype=self.dtype_policy)
    self.proj.build(input_shape)
    self.relative_position_bias_table = self.add_weight(
        name="relative_position_bias_table",
        shape=((2 * self.window_size - 1) ** 2, self.num_heads), initializer="zeros")

  def call(self, inputs):
    window, shift = self.window_size, self.shift_size
    channels = inputs.shape[-1]
    head_dim = channels // self.num_heads
    height, width = tf.shape(inputs)[1], tf.shape(inputs)[2]
    x = _pad_bottom_right(inputs, window)
    padded_h, padded_w = tf.shape(x)[1], tf.shape(x)[2]
    if shift:
      x = tf.roll(x, shift=[-shift, -shift], axis=[1, 2])
    windows = _window_partition(x, window)  # [B*nW, N, C]
    tokens = window * window
    qkv = tf.reshape(self.qkv(windows), [-1, tokens, 3, self.num_heads, head_dim])
    qkv = tf.transpose(qkv, [2, 0, 3, 1, 4])  # [3, B*nW, heads, N, d]
    query, key, value = qkv[0] * tf.cast(self.scale, qkv.dtype), qkv[1], qkv[2]
    logits = tf.cast(tf.linalg.matmul(query, key, transpose_b=True), tf.float32)  # [B*nW, h, N, N]
    bias = tf.gather(tf.cast(self.relative_position_bias_table, tf.float32), self.index)
    bias = tf.transpose(tf.reshape(bias, [tokens, tokens, self.num_heads]), [2, 0, 1])  # [h, N, N]
    logits += bias[None]
    if shift:
      mask = shifted_window_mask(padded_h, padded_w, window, shift)  # [nW, N, N]
      num_windows = tf.shape(mask)[0]
      logits = tf.reshape(logits, [-1, num_windows, self.num_heads, tokens, tokens])
      logits = tf.reshape(logits + mask[None, :, None], [-1, self.num_heads, tokens, tokens])
    attention = tf.cast(tf.nn.softmax(logits, axis=-1), value.dtype)
    out = tf.linalg.matmul(attention, value)  # [B*nW, h, N, d]
    out = tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [-1, tokens, channels])  # [B*nW, N, C]
    x = _window_reverse(self.proj(out), window, padded_h, padded_w)
    if shift:
      x = tf.roll(x, shift=[shift, shift], axis=[1, 2])
    return x[:, :height, :width, :]

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update(num_heads=self.num_heads, window_size=self.window_size,
                  shift_size=self.shift_size)
    return config


@keras.saving.register_keras_serializable("hfgd_tf")
class PadToMultiple(keras.layers.Layer):
  """Zero-pads NHWC inputs at the bottom/right to multiples of `multiple` (no-op when aligned)."""

  def __init__(self, multiple, **kwargs):
    super().__init__(**kwargs)
    self.multiple = multiple

  def call(self, inputs):
    return _pad_bottom_right(inputs, self.multiple)

  def compute_output_shape(self, input_shape):
    def padded(size):
      return None if size is None else -(-size // self.multiple) * self.multiple
    return (input_shape[0], padded(input_shape[1]), padded(input_shape[2]), input_shape[3])

  def get_config(self):
    config = super().get_config()
    config.update(multiple=self.multiple)
    return config


@keras.saving.register_keras_serializable("hfgd_tf")
class PatchMergingGather(keras.layers.Layer):
  """[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 4C]: pad to even, concat of the 2x2 neighbours in
  the official order x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]."""

  def call(self, inputs):
    x = _pad_bottom_right(inputs, 2)
    return tf.concat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                     axis=-1)

  def compute_output_shape(self, input_shape):
    def halved(size):
      return None if size is None else -(-size // 2)
    return (input_shape[0], halved(input_shape[1]), halved(input_shape[2]), 4 * input_shape[3])


def _layer_norm(name):
  return keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=name)


def swin_block(x, name, num_heads, window_size, shift_size, drop_path_rate, mlp_ratio):
  channels = x.shape[-1]
  y = _layer_norm(f"{name}_norm1")(x)
  y = WindowAttention(num_heads, window_size, shift_size, name=f"{name}_attn")(y)
  if drop_path_rate > 0:
    y = DropPath(drop_path_rate, name=f"{name}_drop_path1")(y)
  x = keras.layers.Add(name=f"{name}_add1")([x, y])
  y = _layer_norm(f"{name}_norm2")(x)
  y = keras.layers.Dense(int(channels * mlp_ratio), name=f"{name}_fc1")(y)
  y = keras.layers.Activation("gelu", name=f"{name}_gelu")(y)  # exact (erf) GELU, as official
  y = keras.layers.Dense(channels, name=f"{name}_fc2")(y)
  if drop_path_rate > 0:
    y = DropPath(drop_path_rate, name=f"{name}_drop_path2")(y)
  return keras.layers.Add(name=f"{name}_add2")([x, y])


def build_swin(config, output_stride=32, drop_path_rate=None, sync_batch_norm=False,
               bn_momentum=BN_MOMENTUM, name=None):
  """Builds Swin of `config` as a functional model returning {4, 8, 16, 32: features}."""
  del sync_batch_norm, bn_momentum  # LayerNorm only
  check_output_stride_32(name, output_stride)

  def stem(images):
    x = PadToMultiple(PATCH_SIZE, name="patch_embed_pad")(images)
    x = keras.layers.Conv2D(config.embed_dim, PATCH_SIZE, strides=PATCH_SIZE,
                            name="patch_embed_conv")(x)
    return _layer_norm("patch_embed_norm")(x)

  def downsample(x, stage):
    x = PatchMergingGather(name=f"merge{stage}_gather")(x)
    x = _layer_norm(f"merge{stage}_norm")(x)
    return keras.layers.Dense(x.shape[-1] // 2, use_bias=False, name=f"merge{stage}_reduction")(x)

  def block(x, stage, number, rate):
    shift = 0 if number % 2 == 1 else config.window_size // 2  # odd blocks (from 1): regular
    return swin_block(x, f"stage{stage}_block{number}", config.num_heads[stage - 1],
                      config.window_size, shift, rate, config.mlp_ratio)

  return build_four_stages(stem, downsample, block, config.depths,
                           config.drop_path_rate if drop_path_rate is None else drop_path_rate,
                           name=name)


register_configs(CONFIGS, build_swin)
