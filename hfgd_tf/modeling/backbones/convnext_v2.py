"""ConvNeXtV2 atto..huge (Woo et al., 2023): the ConvNeXt of `convnext.py` with a global response
normalization (GRN, float32) after the GELU of every block and no layer scale.

Drop-path defaults: 0.3 for L (the original codebase) and H; 0.1 for atto..nano and 0.2 for T and B
(the official fine-tuning recipes' order of magnitude; these sizes are not used by the paper).
"""

from hfgd_tf.modeling.backbones import register_configs
from hfgd_tf.modeling.backbones.convnext import ConvNeXtConfig, build_convnext


def _v2(depths, widths, drop_path_rate):
  return ConvNeXtConfig(depths, widths, drop_path_rate, grn=True, layer_scale_init=None)


CONFIGS = {
    "convnext_v2_atto": _v2((2, 2, 6, 2), (40, 80, 160, 320), 0.1),
    "convnext_v2_femto": _v2((2, 2, 6, 2), (48, 96, 192, 384), 0.1),
    "convnext_v2_pico": _v2((2, 2, 6, 2), (64, 128, 256, 512), 0.1),
    "convnext_v2_nano": _v2((2, 2, 8, 2), (80, 160, 320, 640), 0.1),
    "convnext_v2_tiny": _v2((3, 3, 9, 3), (96, 192, 384, 768), 0.2),
    "convnext_v2_base": _v2((3, 3, 27, 3), (128, 256, 512, 1024), 0.2),
    "convnext_v2_large": _v2((3, 3, 27, 3), (192, 384, 768, 1536), 0.3),
    "convnext_v2_huge": _v2((3, 3, 27, 3), (352, 704, 1408, 2816), 0.3),
}

register_configs(CONFIGS, build_convnext)
