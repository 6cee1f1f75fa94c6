"""The context encoders of Table 1, by the `--encoder` value that picks each (config.ENCODERS
lists the values, so the flags need no TensorFlow; tests/test_flags.py keeps the two equal).

Every encoder works on the backbone's deepest features and returns a dict:
  features   [N, h, w, C_out] context features (CAE: 256-D, the input of the class kernels);
  losses     dict of named scalar losses (CAR's, when training with labels);
  aux_logits optional [N, h, w, K] auxiliary logits (OCR's deep supervision).
Each registry entry builds the layer from a ModelConfig and says how many channels it hands on.
"""

import dataclasses
from typing import Callable

import keras

from hfgd_tf.modeling.aspp import ASPPEncoder
from hfgd_tf.modeling.cae import ContextAugmentedEncoder
from hfgd_tf.modeling.car import car_kwargs
from hfgd_tf.modeling.layers.common import norm_kwargs
from hfgd_tf.modeling.ocr import OCREncoder
from hfgd_tf.modeling.self_attention_encoder import NonLocalEncoder
from hfgd_tf.registry import Registry


@keras.saving.register_keras_serializable("hfgd_tf")
class IdentityEncoder(keras.layers.Layer):
  """No context encoding: the backbone features as they are (Table 1, "Identity")."""

  def call(self, inputs, labels=None, training=None):
    del labels, training
    return {"features": inputs, "losses": {}}


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
  """build(config, name) -> layer; output_channels(config, backbone_channels) -> its width."""
  build: Callable
  output_channels: Callable


ENCODERS = Registry("encoder")

ENCODERS.register("cae")(EncoderSpec(
    build=lambda config, name: ContextAugmentedEncoder(
        config.encoder_filters, config.cae_kernel_size, config.cae_car_filters,
        config.decoder_filters, car=car_kwargs(config), norm=norm_kwargs(config), name=name),
    output_channels=lambda config, backbone_channels: config.decoder_filters))
ENCODERS.register("sa_car")(EncoderSpec(
    build=lambda config, name: NonLocalEncoder(
        config.encoder_filters, use_car=True, car=car_kwargs(config), norm=norm_kwargs(config),
        name=name),
    output_channels=lambda config, backbone_channels: config.encoder_filters))
ENCODERS.register("sa")(EncoderSpec(
    build=lambda config, name: NonLocalEncoder(
        config.encoder_filters, use_car=False, norm=norm_kwargs(config), name=name),
    output_channels=lambda config, backbone_channels: config.encoder_filters))
ENCODERS.register("aspp")(EncoderSpec(
    build=lambda config, name: ASPPEncoder(
        config.decoder_filters, config.backbone_output_stride, norm=norm_kwargs(config),
        name=name),
    output_channels=lambda config, backbone_channels: config.decoder_filters))
ENCODERS.register("ocr")(EncoderSpec(
    build=lambda config, name: OCREncoder(
        config.num_classes, config.encoder_filters, norm=norm_kwargs(config), name=name),
    output_channels=lambda config, backbone_channels: config.encoder_filters))
ENCODERS.register("identity")(EncoderSpec(
    build=lambda config, name: IdentityEncoder(name=name),
    output_channels=lambda config, backbone_channels: backbone_channels))


def build_encoder(config, name="encoder"):
  return ENCODERS.get(config.encoder).build(config, name)


def encoder_channels(config, backbone_channels):
  """Channels the configured encoder outputs, given the backbone's OS=32 width."""
  return ENCODERS.get(config.encoder).output_channels(config, backbone_channels)
