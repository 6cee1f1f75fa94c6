"""Backbone shapes, strides, dilation and drop-path behaviour on tiny configurations."""

import math

import keras
import numpy as np
import pytest

from hfgd_tf.backbones import BACKBONES, backbone_names, build_backbone

TINY_CHANNELS = {
    "resnet_test": {2: 16, 4: 32, 8: 64, 16: 128, 32: 256},
    "convnext_test": {4: 8, 8: 16, 16: 32, 32: 64},
}


def _images(height, width, batch=1, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, 3)).astype("float32")


def _shapes(model, images):
  return {k: tuple(v.shape) for k, v in model(images, training=False).items()}


def _expected(channels, height, width, output_stride=32):
  return {s: (1, math.ceil(height / min(s, output_stride)), math.ceil(width / min(s, output_stride)), c)
          for s, c in channels.items()}


def test_registry_lists_every_builder():
  names = set(backbone_names())
  for expected in ("resnet50", "resnet101", "convnext_tiny", "convnext_small", "convnext_base",
                   "convnext_large", "convnext_xlarge", *TINY_CHANNELS):
    assert expected in names
  assert BACKBONES.get("resnet_test") is not BACKBONES.get("convnext_test")


@pytest.mark.parametrize("name", sorted(TINY_CHANNELS))
@pytest.mark.parametrize("size", [(513, 513), (513, 1025)])
def test_tiny_feature_shapes(name, size):
  model = build_backbone(name)
  assert _shapes(model, _images(*size)) == _expected(TINY_CHANNELS[name], *size)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_resnet_output_stride(output_stride):
  model = build_backbone("resnet_test", output_stride=output_stride)
  assert _shapes(model, _images(65, 97)) == _expected(TINY_CHANNELS["resnet_test"], 65, 97,
                                                      output_stride)


def test_resnet_dilation_convention_at_os8():
  """Reference §8.1: stage-2 last block rate 2; stage-3 rates 2.. and 4 last; stage-4 4, 8, 16."""
  model = build_backbone("resnet_test", output_stride=8)
  rates = {layer.name: (layer.dilation_rate[0], layer.strides[0]) for layer in model.layers
           if layer.name.endswith("_2_conv") and layer.name.startswith("stage")}
  assert rates == {
      "stage1_block1_2_conv": (1, 1), "stage1_block2_2_conv": (1, 2),
      "stage2_block1_2_conv": (1, 1), "stage2_block2_2_conv": (2, 1),
      "stage3_block1_2_conv": (2, 1), "stage3_block2_2_conv": (4, 1),
      "stage4_block1_2_conv": (4, 1), "stage4_block2_2_conv": (8, 1),
      "stage4_block3_2_conv": (16, 1)}


def test_resnet_structure():
  model = build_backbone("resnet_test", bn_momentum=0.99)
  names = {layer.name for layer in model.layers}
  # The strided last block shortcuts by 2x2 average pooling, the first block by projection.
  assert "stage1_block2_shortcut_pool" in names and "stage1_block1_shortcut_conv" in names
  assert "stage4_block3_shortcut_pool" not in names
  for layer in model.layers:
    if isinstance(layer, keras.layers.Conv2D):
      assert not layer.use_bias, layer.name
    if isinstance(layer, keras.layers.BatchNormalization):
      assert layer.epsilon == 1.001e-5 and layer.momentum == 0.99


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_resnet_parameter_counts(name):
  # Regression values. Keras' 7x7 ResNet-50/101 without top have 23.59M / 42.66M; the deep stem
  # (3x3 64-64-128) and the 128-channel input of stage 1 add ~0.1M, the missing conv biases take a
  # little off.
  expected = {"resnet50": 23_685_312, "resnet101": 42_729_664}[name]
  assert build_backbone(name).count_params() == expected


def test_convnext_structure_and_drop_path_schedule():
  model = build_backbone("convnext_test", drop_path_rate=0.5)
  layers = {layer.name: layer for layer in model.layers}
  assert isinstance(layers["stage1_block1_dwconv"], keras.layers.DepthwiseConv2D)
  assert layers["stage1_block1_norm"].epsilon == 1e-6
  # linspace(0, 0.5, 5): the first block has no drop path, the last one 0.5.
  assert "stage1_block1_drop_path" not in layers
  assert layers["stage3_block2_drop_path"].rate == pytest.approx(0.375)
  assert layers["stage4_block1_drop_path"].rate == pytest.approx(0.5)
  gamma = layers["stage2_block1_layer_scale"].gamma.numpy()
  np.testing.assert_array_equal(gamma, np.full_like(gamma, 1e-6))


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_large"])
def test_convnext_real_config_channels(name):
  model = build_backbone(name)
  widths = {"convnext_tiny": 96, "convnext_large": 192}[name]
  assert {k: v.shape[-1] for k, v in model.output.items()} == {
      4: widths, 8: 2 * widths, 16: 4 * widths, 32: 8 * widths}
  # The official counts (28,589,128 / 197,767,336) less the classifier and its final LayerNorm.
  expected = {"convnext_tiny": 27_818_592, "convnext_large": 196_227_264}[name]
  assert model.count_params() == expected


@pytest.mark.parametrize("name", ["resnet_test", "convnext_test"])
def test_drop_path_only_in_training(name):
  model = build_backbone(name, drop_path_rate=0.9)
  images = _images(64, 64, batch=4)
  first, second = model(images, training=False), model(images, training=False)
  for stride in first:
    np.testing.assert_array_equal(first[stride].numpy(), second[stride].numpy())
  if name.startswith("convnext"):
    trained = model(images, training=True)
    assert not np.allclose(trained[32].numpy(), first[32].numpy())


def test_rejects_unsupported_output_stride():
  with pytest.raises(ValueError, match="output_stride"):
    build_backbone("convnext_test", output_stride=16)
  with pytest.raises(ValueError, match="output_stride"):
    build_backbone("resnet_test", output_stride=4)
