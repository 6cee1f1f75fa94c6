"""ResNet-50/101 as in the original codebase ("modern ResNet", reference §8.1).

Differences from `keras.applications.ResNet50` (see `keras_resnet.py` for that one):
  * deep stem: three 3x3 convs 64-64-128 (the first with stride 2), then a 3x3 s2 "same" max-pool;
  * the stride of stages 1-3 sits on the LAST block of the stage (on its 3x3 conv), whose identity
    shortcut is a 2x2 "same" average pool; the first block of each stage has a 1x1 projection
    shortcut with stride 1 (resnet_v1_beta / "Bag of Tricks" layout);
  * multi-grid: the last stage's three 3x3 convs always get dilation x(1, 2, 4), also at OS 32;
  * no biases; BN epsilon 1.001e-5.

Output stride 16 or 8 replaces strides by dilation. The convention is the reference's: a block
that would take the features past `output_stride` gets stride 1 and the rate multiplied by its
stride, and already uses that new rate itself. At OS 8 this gives stage-2's last block rate 2,
stage-3 blocks 1-5 rate 2 and block 6 rate 4, stage-4 rates 4, 8, 16.

Endpoints (513 input, OS 32): 2 = stem output before the max-pool (128 ch, 257), 4/8/16 = stage
1/2/3 output BEFORE its last (strided) block (256/512/1024 ch; 129/65/33), 32 = final (2048 ch, 17).
"""

import dataclasses
from typing import Tuple

import keras

from hfgd_tf.config import BN_MOMENTUM
from hfgd_tf.modeling.backbones import register_configs

BN_EPSILON = 1.001e-5
EXPANSION = 4


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  blocks: Tuple[int, int, int, int]
  widths: Tuple[int, int, int, int] = (64, 128, 256, 512)  # bottleneck widths; outputs are 4x
  stem_widths: Tuple[int, int, int] = (64, 64, 128)
  multi_grid: Tuple[int, ...] = (1, 2, 4)  # dilation multipliers of the last stage's blocks


CONFIGS = {
    "resnet50": ResNetConfig(blocks=(3, 4, 6, 3)),
    "resnet101": ResNetConfig(blocks=(3, 4, 23, 3)),
    # The built-in demo's backbone (experiments/builtin/demo.cfg): two blocks per stage so every
    # stage keeps its strided last block, three in the last so the multi-grid (1, 2, 4) applies
    # unchanged; outputs 64/128/256/512 channels at OS 4/8/16/32, trainable from scratch on a CPU
    # in minutes.
    "resnet_tiny": ResNetConfig(blocks=(2, 2, 2, 3), widths=(16, 32, 64, 128),
                                stem_widths=(16, 16, 32)),
}


def _conv_bn(x, filters, kernel_size, name, strides=1, dilation_rate=1, relu=True,
             sync_batch_norm=False, bn_momentum=BN_MOMENTUM):
  x = keras.layers.Conv2D(filters, kernel_size, strides=strides, dilation_rate=dilation_rate,
                          padding="same", use_bias=False, name=f"{name}_conv")(x)
  x = keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=BN_EPSILON,
                                      synchronized=sync_batch_norm, name=f"{name}_bn")(x)
  return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _bottleneck(x, width, name, strides, dilation_rate, projection, bn_args):
  """Bottleneck v1 (post-activation): 1x1 -> 3x3 (stride, dilation) -> 1x1 (4x), plus shortcut."""
  if projection:
    shortcut = _conv_bn(x, width * EXPANSION, 1, f"{name}_shortcut", relu=False, **bn_args)
  elif strides > 1:
    shortcut = keras.layers.AveragePooling2D(strides, strides=strides, padding="same",
                                             name=f"{name}_shortcut_pool")(x)
  else:
    shortcut = x
  y = _conv_bn(x, width, 1, f"{name}_1", **bn_args)
  y = _conv_bn(y, width, 3, f"{name}_2", strides=strides, dilation_rate=dilation_rate, **bn_args)
  y = _conv_bn(y, width * EXPANSION, 1, f"{name}_3", relu=False, **bn_args)
  y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
  return keras.layers.ReLU(name=f"{name}_out")(y)


def build_resnet(config, output_stride=32, drop_path_rate=None, sync_batch_norm=False,
                 bn_momentum=BN_MOMENTUM, name=None):
  """Builds the modern ResNet of `config` as a functional model returning {stride: features}."""
  del drop_path_rate  # this ResNet has no stochastic depth
  if output_stride not in (8, 16, 32):
    raise ValueError(f"ResNet output_stride must be 8, 16 or 32, got {output_stride}")
  if len(config.multi_grid) != config.blocks[3]:
    raise ValueError(f"multi_grid {config.multi_grid} needs one entry per last-stage block "
                     f"({config.blocks[3]})")
  bn_args = dict(sync_batch_norm=sync_batch_norm, bn_momentum=bn_momentum)
  images = keras.Input((None, None, 3), name="images")
  x = images
  for i, filters in enumerate(config.stem_widths, start=1):
    x = _conv_bn(x, filters, 3, f"stem_{i}", strides=2 if i == 1 else 1, **bn_args)
  endpoints = {2: x}
  x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)

  current_stride, rate = 4, 1
  for stage, (num_blocks, width) in enumerate(zip(config.blocks, config.widths), start=1):
    last_stage = stage == 4
    for block in range(1, num_blocks + 1):
      last_block = block == num_blocks
      strides = 2 if last_block and not last_stage else 1
      if last_block and not last_stage:
        endpoints[2 ** (stage + 1)] = x  # stage output before its strided last block
      if strides > 1 and current_stride >= output_stride:
        rate *= strides  # dilate instead of striding; this block already uses the new rate
        strides = 1
      block_rate = rate * config.multi_grid[block - 1] if last_stage else rate
      x = _bottleneck(x, width, f"stage{stage}_block{block}", strides, block_rate,
                      projection=block == 1, bn_args=bn_args)
      if strides > 1:
        current_stride *= strides
  endpoints[32] = x
  return keras.Model(images, endpoints, name=name)


register_configs(CONFIGS, build_resnet)
