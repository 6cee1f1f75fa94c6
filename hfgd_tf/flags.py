"""Command-line flags for the model, generated from ModelConfig so the two never drift apart."""

import dataclasses
import typing

from absl import flags

from hfgd_tf.config import DECODERS, ENCODERS, ModelConfig

_ENUMS = {"encoder": ENCODERS, "decoder": DECODERS}
_HELP = {
    "num_classes": "Number of classes K (labels 0..K-1; ignore_label elsewhere).",
    "backbone": "Backbone name (see hfgd_tf/backbones).",
    "backbone_output_stride": "Backbone output stride: 32, or 16/8 with dilation (D8 baselines).",
    "drop_path_rate": "Stochastic depth of the backbone; unset = the backbone's own default.",
    "encoder": "Context encoder at OS=32 (Table 1); cae is the paper's CAE.",
    "decoder": "Upsampling decoder: none, sfpn (SemanticFPN) or usfpn (U-SFPN).",
    "decoder_output_stride": "Decoder output stride: 4, or 2 (U-SFPN's extra block).",
    "hfgm": "Guide the decoder with the class kernels (HFGM).",
    "hfgm_axial_attention": "Axial attention inside HFGM (Table 2).",
    "cae_loss_weight": "Weight of the CE on the OS=32 (CAE) logits.",
    "ce_average_valid_only": "Average the CE over labelled pixels only (the original: all).",
    "sync_batch_norm": "Synchronized batch norm across replicas.",
}


def _field_type(field):
  hint = typing.get_type_hints(ModelConfig)[field.name]
  args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
  return args[0] if args else hint


def define_model_flags():
  """Defines one flag per ModelConfig field (same name, default and type)."""
  for field in dataclasses.fields(ModelConfig):
    kind = _field_type(field)
    help_text = _HELP.get(field.name, f"Model config: {field.name.replace('_', ' ')}.")
    if field.name in _ENUMS:
      flags.DEFINE_enum(field.name, field.default, _ENUMS[field.name], help_text)
    elif kind is bool:
      flags.DEFINE_bool(field.name, field.default, help_text)
    elif kind is int:
      flags.DEFINE_integer(field.name, field.default, help_text)
    elif kind is float:
      flags.DEFINE_float(field.name, field.default, help_text)
    else:
      flags.DEFINE_string(field.name, field.default, help_text)


def model_config_from_flags(flag_values=flags.FLAGS):
  """The ModelConfig the flags describe, validated (errors name the flag)."""
  values = {field.name: flag_values[field.name].value for field in dataclasses.fields(ModelConfig)}
  return ModelConfig(**values).validate()
