"""Every custom layer through the shared harness: config round trip, mixed precision, SavedModel,
initial weights however built."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from hfgd_tf.modeling.aspp import ASPP, ASPPEncoder
from hfgd_tf.modeling.backbones.convnext import GlobalResponseNorm, LayerScale
from hfgd_tf.modeling.backbones.swin import PadToMultiple, PatchMergingGather, WindowAttention
from hfgd_tf.modeling.cae import ContextAugmentedEncoder
from hfgd_tf.modeling.car import ClassAwareRegularization
from hfgd_tf.modeling.encoders import IdentityEncoder
from hfgd_tf.modeling.hfgm import HFGM
from hfgd_tf.modeling.layers.axial_attention import AxialAttention
from hfgd_tf.modeling.layers.common import ConvNormAct, DropPath
from hfgd_tf.modeling.layers.self_attention import SelfAttention
from hfgd_tf.modeling.ocr import OCR, OCREncoder
from hfgd_tf.modeling.self_attention_encoder import NonLocalEncoder
from hfgd_tf.modeling.usfpn import SemanticFPN
from tests.layer_harness import (LayerCase, check_config_round_trip, check_initial_weights,
                                 check_mixed_precision, check_saved_model)

NUM_CLASSES = 3


def _features(channels, height=9, width=7, seed=0):
  return tf.random.stateless_normal([2, height, width, channels], [seed, 1])


def _labels(height=9, width=7):
  labels = tf.random.stateless_uniform([2, height, width], [2, 3], 0, NUM_CLASSES + 1, tf.int32)
  return tf.where(labels == NUM_CLASSES, 255, labels)  # a few ignored pixels


def _with_labels(layer, inputs, companions):
  del companions
  return layer(inputs["features"], labels=inputs["labels"], training=True)


def _hfgm(layer, inputs, companions):
  return layer(inputs, classifier=companions["classifier"])


def _classifier():
  classifier = keras.layers.Conv2D(NUM_CLASSES, 1)
  classifier.build([None, None, None, 8])
  return {"classifier": classifier}


def _fpn(layer, inputs, companions):
  del companions
  pyramid = {stride: inputs[f"os{stride}"] for stride in (4, 8, 16)}
  return layer(pyramid, inputs["top"], output_size=(33, 33))


def _query_equals_key(attention):
  """What a shared-initializer q/k pair means: both kernels start from one sample."""
  def check(layer):
    convs = layer
    for name in attention:
      convs = getattr(convs, name)
    np.testing.assert_array_equal(convs.query_conv.kernel.numpy(), convs.key_conv.kernel.numpy())
    assert convs.query_conv.kernel is not convs.key_conv.kernel
    return []
  return check


def _constant(name, value):
  """`name` (an add_weight, with no initializer attribute) holds `value` everywhere."""
  def check(layer):
    weight = getattr(layer, name)
    np.testing.assert_array_equal(weight.numpy(), np.full(weight.shape, value, np.float32))
    return [weight]
  return check


def _grn_is_identity(layer):
  return _constant("gamma", 0.0)(layer) + _constant("beta", 0.0)(layer)


CAR_ARGS = dict(num_classes=NUM_CLASSES)
LABELLED = {"features": _features(16), "labels": _labels()}
CASES = {
    "ConvNormAct": LayerCase(lambda **kw: ConvNormAct(8, 3, **kw), _features(4)),
    "DropPath": LayerCase(lambda **kw: DropPath(0.3, **kw), _features(4)),
    "SelfAttention": LayerCase(lambda **kw: SelfAttention(8, 16, **kw), _features(16),
                               initial_weights=_query_equals_key(())),
    "AxialAttention": LayerCase(lambda **kw: AxialAttention(4, **kw), _features(16),
                                initial_weights=_query_equals_key(())),
    "ClassAwareRegularization": LayerCase(
        lambda **kw: ClassAwareRegularization(filters=8, **CAR_ARGS, **kw), LABELLED,
        call=_with_labels),
    "ContextAugmentedEncoder": LayerCase(
        lambda **kw: ContextAugmentedEncoder(16, 1, 8, 8, car=CAR_ARGS, **kw), LABELLED,
        call=_with_labels, initial_weights=_query_equals_key(("attention",))),
    "NonLocalEncoder+CAR": LayerCase(
        lambda **kw: NonLocalEncoder(16, use_car=True, car=CAR_ARGS, **kw), LABELLED,
        call=_with_labels, initial_weights=_query_equals_key(("attention",))),
    "NonLocalEncoder": LayerCase(lambda **kw: NonLocalEncoder(16, **kw), _features(8),
                                 initial_weights=_query_equals_key(("attention",))),
    "ASPP": LayerCase(lambda **kw: ASPP(8, **kw), _features(8)),
    "ASPPEncoder": LayerCase(lambda **kw: ASPPEncoder(8, **kw), _features(8)),
    "OCR": LayerCase(lambda **kw: OCR(NUM_CLASSES, 16, **kw), _features(8)),
    "OCREncoder": LayerCase(lambda **kw: OCREncoder(NUM_CLASSES, 16, **kw), _features(8)),
    "IdentityEncoder": LayerCase(lambda **kw: IdentityEncoder(**kw), _features(8)),
    "SemanticFPN-OS2": LayerCase(
        lambda **kw: SemanticFPN(8, 3, output_stride=2, top_lateral=True, **kw),
        {"os4": _features(4, 17, 17), "os8": _features(4, 9, 9), "os16": _features(4, 5, 5),
         "top": _features(6, 3, 3)}, call=_fpn),
    "HFGM": LayerCase(lambda **kw: HFGM(True, 2, **kw), _features(8), call=_hfgm,
                      make_companions=_classifier,
                      initial_weights=_query_equals_key(("axial_attention",))),
    "LayerScale": LayerCase(lambda **kw: LayerScale(0.5, **kw), _features(8),
                            initial_weights=_constant("gamma", 0.5)),
    "GlobalResponseNorm": LayerCase(lambda **kw: GlobalResponseNorm(**kw), _features(8),
                                    initial_weights=_grn_is_identity),
    "WindowAttention": LayerCase(lambda **kw: WindowAttention(2, 3, shift_size=1, **kw),
                                 _features(8),
                                 initial_weights=_constant("relative_position_bias_table", 0.0)),
    "PadToMultiple": LayerCase(lambda **kw: PadToMultiple(4, **kw), _features(3)),
    "PatchMergingGather": LayerCase(lambda **kw: PatchMergingGather(**kw), _features(3, 8, 6)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trip(name):
  check_config_round_trip(CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_mixed_precision(name):
  check_mixed_precision(CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_initial_weights_in_a_functional_model_and_from_config(name):
  check_initial_weights(CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_model(name, tmp_path):
  check_saved_model(CASES[name], tmp_path / "saved")
