"""The SGD recipe's L2 set under --weight_decay_scope=original for each model family of the paper's
flagfiles, as docs/training.md lists it, and CAR's end BN momentum (0.9 whatever --bn_momentum
says). Real flagfiles, on the tiny test backbone: the sets name no backbone layer."""

import os

import keras
import pytest
from absl import flags

from hfgd_tf import flags as hfgd_flags
from hfgd_tf.config import CAR_END_BN_MOMENTUM
from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.modeling.model import build_model
from hfgd_tf.optimization import l2_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAE = ["encoder/leading_conv1/conv", "encoder/leading_conv2/conv",
       "encoder/self_attention/query", "encoder/self_attention/key",
       "encoder/self_attention/value", "class_kernels"]
NON_LOCAL = ["encoder/down_conv/conv", "encoder/self_attention/query",
             "encoder/self_attention/key", "encoder/self_attention/value"]
# flagfile stem -> the layers whose kernels get L2 (paths under hfgd/).
EXPECTED = {
    "sa-car_r50-d8_bs16-30k": NON_LOCAL + ["class_kernels"],
    "sa_r50_bs16-30k": NON_LOCAL + ["encoder/end_conv/conv", "class_kernels"],
    "aspp-sfpn_r50_bs16-30k": [
        "encoder/aspp/pool_conv/conv", "encoder/aspp/conv1x1/conv",
        "encoder/aspp/conv3x3_rate3/conv", "encoder/aspp/conv3x3_rate6/conv",
        "encoder/aspp/conv3x3_rate9/conv", "encoder/end_conv/conv", "class_kernels"],
    "ocr_r50_bs16-30k": [
        "encoder/ocr/down_conv/conv", "encoder/ocr/query_conv1/conv",
        "encoder/ocr/query_conv2/conv", "encoder/ocr/key_conv1/conv",
        "encoder/ocr/key_conv2/conv", "encoder/ocr/value_conv/conv", "encoder/ocr/end_conv/conv"],
    "sfpn_r50_bs16-30k": ["class_kernels"],
    "cae_r50_bs16-30k": CAE,
    "hfgd-os4_r50_bs16-30k": CAE,
    "hfgd-os2_r50_bs16-30k": CAE,
}


def _settings(stem):
  values = flags.FlagValues()
  hfgd_flags.define_all_flags(values)
  flagfile = os.path.join(ROOT, "experiments", "pascal_context",
                          f"{stem}_pascal-context-59-513.cfg")
  values(expand_flagfiles([
      "test", f"--flagfile={flagfile}", "--backbone=resnet_test", "--backbone_weights=none",
      "--mixed_precision=none", "--encoder_filters=16", "--decoder_filters=8",
      "--cae_car_filters=8"]))
  return hfgd_flags.settings_from_flags(values, "train")


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_original_scope_penalises_the_kernels_the_original_did(stem):
  settings = _settings(stem)
  assert settings.train.weight_decay_scope == "original"  # the SGD recipe's
  model = build_model(settings.model)
  penalised = sorted(variable.path for variable in l2_variables(model, settings.train))
  assert penalised == sorted(f"hfgd/{layer}/kernel" for layer in EXPECTED[stem])


@pytest.mark.parametrize("stem", ["sa-car_r50-d8_bs16-30k", "hfgd-os4_r50_bs16-30k"])
def test_car_end_batch_norm_keeps_kerass_default_momentum(stem):
  settings = _settings(stem)
  model = build_model(settings.model)
  momenta = {layer.path: layer.momentum for layer in model._flatten_layers()
             if isinstance(layer, keras.layers.BatchNormalization)}
  assert momenta.pop("hfgd/encoder/car/end_conv/bn") == CAR_END_BN_MOMENTUM == 0.9
  assert set(momenta.values()) == {settings.model.bn_momentum} == {0.9997}
