"""Tiny configs of every backbone family, registered for tests only (never in the production
registry): a few channels and blocks each, so a model builds and trains in seconds on a CPU.

Imported by conftest.py and by the scripts tests run in subprocesses.
"""

from hfgd_tf.modeling.backbones import (BACKBONES, convnext, convnext_v2, register_configs, resnet,
                                        swin)

RESNET_TEST = resnet.ResNetConfig(blocks=(2, 2, 2, 3), widths=(8, 16, 32, 64),
                                  stem_widths=(8, 8, 16))
CONVNEXT_TEST = convnext.ConvNeXtConfig((1, 1, 2, 1), (8, 16, 32, 64), 0.1)
CONVNEXT_V2_TEST = convnext_v2.ConvNeXtConfig((1, 1, 2, 1), (8, 16, 32, 64), 0.1, grn=True,
                                              layer_scale_init=None)
SWIN_TEST = swin.SwinConfig(12, (2, 2, 2, 2), (1, 2, 3, 4), 3, drop_path_rate=0.1)


def register():
  """Registers resnet_test, convnext_test, convnext_v2_test and swin_test (once per process)."""
  if "resnet_test" in BACKBONES:
    return
  register_configs({"resnet_test": RESNET_TEST}, resnet.build_resnet)
  register_configs({"convnext_test": CONVNEXT_TEST, "convnext_v2_test": CONVNEXT_V2_TEST},
                   convnext.build_convnext)
  register_configs({"swin_test": SWIN_TEST}, swin.build_swin)
