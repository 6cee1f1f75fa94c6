"""The upsampling decoders (SFPN, U-SFPN) by the `--decoder` value that picks each, with "none"
(classify at the encoder's stride) beside them. config.DECODERS lists the values, so the flags
need no TensorFlow; tests/test_flags.py keeps the two equal."""

from hfgd_tf.modeling.layers.common import norm_kwargs
from hfgd_tf.modeling.usfpn import SemanticFPN
from hfgd_tf.registry import Registry

NO_DECODER = "none"
DECODERS = Registry("decoder")


def _semantic_fpn(lateral_kernel_size):
  """Builder of a SemanticFPN `decoder_filters` wide whose laterals are `lateral_kernel_size`."""
  def build(config, top_channels, name):
    return SemanticFPN(config.decoder_filters, lateral_kernel_size=lateral_kernel_size,
                       output_stride=config.decoder_output_stride,
                       top_lateral=top_channels != config.decoder_filters,
                       align_corners=config.align_corners, norm=norm_kwargs(config), name=name)
  return build


# SFPN as the paper's baselines build it (1x1 laterals); U-SFPN (Sec. 3.3) with 3x3 laterals.
DECODERS.register("sfpn")(_semantic_fpn(1))
DECODERS.register("usfpn")(_semantic_fpn(3))


def build_decoder(config, top_channels, name="decoder"):
  """The configured decoder for a top (encoder output) of `top_channels`; None for "none"."""
  if config.decoder == NO_DECODER:
    return None
  return DECODERS.get(config.decoder)(config, top_channels, name)
