"""Backbone shapes, strides, dilation and drop-path behaviour on tiny configurations."""

import math

import keras
import numpy as np
import pytest

from hfgd_tf.modeling.backbones import BACKBONES, build_backbone
from hfgd_tf.flops import PUBLISHED_BACKBONES, backbone_complexity

TINY_CHANNELS = {
    "resnet_test": {2: 16, 4: 32, 8: 64, 16: 128, 32: 256},
    "convnext_test": {4: 8, 8: 16, 16: 32, 32: 64},
    "convnext_v2_test": {4: 8, 8: 16, 16: 32, 32: 64},
    "swin_test": {4: 12, 8: 24, 16: 48, 32: 96},
}


def _images(height, width, batch=1, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, 3)).astype("float32")


def _shapes(model, images):
  return {k: tuple(v.shape) for k, v in model(images, training=False).items()}


def _expected(channels, height, width, output_stride=32):
  return {s: (1, math.ceil(height / min(s, output_stride)),
              math.ceil(width / min(s, output_stride)), c)
          for s, c in channels.items()}


def test_an_unknown_backbone_lists_every_builder():
  with pytest.raises(ValueError, match="^unknown backbone 'resnet5'; choose one of ") as error:
    build_backbone("resnet5")
  names = set(str(error.value).split("choose one of ")[1].split(", "))
  for expected in ("resnet50", "resnet101", "keras_resnet50", "keras_resnet101", "convnext_tiny",
                   "convnext_small", "convnext_base", "convnext_large", "convnext_xlarge",
                   "convnext_v2_atto", "convnext_v2_femto", "convnext_v2_pico", "convnext_v2_nano",
                   "convnext_v2_tiny", "convnext_v2_base", "convnext_v2_large", "convnext_v2_huge",
                   "swin_tiny_224", "swin_small_224", "swin_base_224", "swin_base_384",
                   "swin_large_224", "swin_large_384", *TINY_CHANNELS):
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


@pytest.mark.parametrize("name", ["resnet_test", "convnext_test", "convnext_v2_test", "swin_test"])
def test_drop_path_only_in_training(name):
  model = build_backbone(name, drop_path_rate=0.9)
  images = _images(64, 64, batch=4)
  first, second = model(images, training=False), model(images, training=False)
  for stride in first:
    np.testing.assert_array_equal(first[stride].numpy(), second[stride].numpy())
  if name != "resnet_test":  # the ResNet has no drop path; its inference must still be stable
    trained = model(images, training=True)
    assert not np.allclose(trained[32].numpy(), first[32].numpy())


def test_rejects_unsupported_output_stride():
  for name in ("convnext_test", "convnext_v2_test", "swin_test", "keras_resnet50"):
    with pytest.raises(ValueError, match="output_stride"):
      build_backbone(name, output_stride=16)
  with pytest.raises(ValueError, match="output_stride"):
    build_backbone("resnet_test", output_stride=4)


def test_keras_resnet_endpoints():
  model = build_backbone("keras_resnet50", bn_momentum=0.9)
  assert _shapes(model, _images(65, 97)) == _expected(
      {2: 64, 4: 256, 8: 512, 16: 1024, 32: 2048}, 65, 97)
  assert model.count_params() == 23_587_712  # keras.applications.ResNet50(include_top=False)
  assert all(layer.momentum == 0.9 for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization))


def test_convnext_v2_blocks_have_grn_and_no_layer_scale():
  model = build_backbone("convnext_v2_test")
  names = {layer.name for layer in model.layers}
  assert "stage1_block1_grn" in names
  assert not any(name.endswith("_layer_scale") for name in names)


def test_grn_matches_numpy_and_is_float32_inside():
  # pylint: disable-next=import-outside-toplevel
  from hfgd_tf.modeling.backbones.convnext import GlobalResponseNorm
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 5, 6, 4)).astype("float32")
  layer = GlobalResponseNorm()
  layer.build(x.shape)
  gamma, beta = rng.normal(size=4).astype("float32"), rng.normal(size=4).astype("float32")
  layer.gamma.assign(gamma)
  layer.beta.assign(beta)
  gx = np.sqrt((x.astype("float64") ** 2).sum(axis=(1, 2), keepdims=True))
  nx = gx / (gx.mean(axis=-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(layer(x).numpy(), gamma * (x * nx) + beta + x, rtol=1e-5, atol=1e-5)
  half = GlobalResponseNorm(dtype="mixed_float16")
  half.build(x.shape)
  assert half(x.astype("float16")).dtype == "float16"


def test_convnext_v2_large_parameter_count():
  # Official 197,956,840 less the classifier (1536*1000 + 1000) and final norm (2*1536).
  assert build_backbone("convnext_v2_large").count_params() == 196_416_768


@pytest.mark.parametrize("name, expected", [("swin_tiny_224", 27_517_818),
                                            ("swin_large_384", 195_195_444)])
def test_swin_real_config(name, expected):
  # Swin-T: the official 28,288,354 less the classifier and final norm; Swin-L 384 has bigger
  # relative position bias tables (23^2 rows) than the 224 version.
  model = build_backbone(name)
  widths = {"swin_tiny_224": 96, "swin_large_384": 192}[name]
  assert {k: v.shape[-1] for k, v in model.output.items()} == {
      4: widths, 8: 2 * widths, 16: 4 * widths, 32: 8 * widths}
  assert model.count_params() == expected


def test_swin_odd_size():
  model = build_backbone("swin_test")
  assert _shapes(model, _images(67, 45)) == _expected(TINY_CHANNELS["swin_test"], 67, 45)


def _numpy_window_attention(x, layer, qkv_kernel, qkv_bias, proj_kernel, proj_bias, table):
  """Direct definition in the unrolled frame: a token attends to the tokens of its group, the
  groups being cut at s + k*w along each axis (s = shift) of the zero-padded input."""
  window, shift, heads = layer.window_size, layer.shift_size, layer.num_heads
  _, height, width, channels = x.shape
  padded_h, padded_w = -(-height // window) * window, -(-width // window) * window
  padded = np.zeros((padded_h, padded_w, channels))
  padded[:height, :width] = x[0]
  rows, cols = np.meshgrid(np.arange(padded_h), np.arange(padded_w), indexing="ij")
  rows, cols = rows.reshape(-1), cols.reshape(-1)
  group = ((rows - shift) // window) * 10_000 + (cols - shift) // window
  tokens = padded.reshape(-1, channels)
  qkv = (tokens @ qkv_kernel + qkv_bias).reshape(-1, 3, heads, channels // heads)
  out = np.zeros((len(tokens), heads, channels // heads))
  for i in range(len(tokens)):
    keys = np.flatnonzero(group == group[i])
    for h in range(heads):
      logits = qkv[keys, 1, h] @ qkv[i, 0, h] * (channels // heads) ** -0.5
      logits += table[(rows[i] - rows[keys] + window - 1) * (2 * window - 1)
                      + cols[i] - cols[keys] + window - 1, h]
      weights = np.exp(logits - logits.max())
      out[i, h] = weights @ qkv[keys, 2, h] / weights.sum()
  out = out.reshape(-1, channels) @ proj_kernel + proj_bias
  return out.reshape(padded_h, padded_w, channels)[:height, :width]


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_window_attention_matches_direct_definition(shift):
  # pylint: disable-next=import-outside-toplevel
  from hfgd_tf.modeling.backbones.swin import WindowAttention
  rng = np.random.default_rng(shift)
  x = rng.normal(size=(1, 7, 8, 4)).astype("float32")
  layer = WindowAttention(num_heads=2, window_size=3, shift_size=shift)
  layer.build(x.shape)
  values = [rng.normal(size=v.shape).astype("float32") for v in
            (layer.qkv.kernel, layer.qkv.bias, layer.proj.kernel, layer.proj.bias,
             layer.relative_position_bias_table)]
  for variable, value in zip((layer.qkv.kernel, layer.qkv.bias, layer.proj.kernel,
                              layer.proj.bias, layer.relative_position_bias_table), values):
    variable.assign(value)
  expected = _numpy_window_attention(x, layer, *values)
  np.testing.assert_allclose(layer(x).numpy()[0], expected, rtol=1e-4, atol=1e-4)


def test_layer_depths():
  # pylint: disable-next=import-outside-toplevel
  from hfgd_tf.modeling.backbones.layer_decay import layer_depths, num_depths
  convnext = build_backbone("convnext_base")  # depths 3-3-27-3: official levels 0..12
  depths = layer_depths(convnext)
  assert set(depths) == {v.path for v in convnext.weights}
  assert depths["stem_conv/kernel"] == 0 and depths["stage1_block3_dwconv/kernel"] == 1
  assert depths["downsample2_conv/kernel"] == 2 and depths["stage3_block1_norm/gamma"] == 3
  assert depths["stage3_block27_pwconv2/bias"] == 11
  assert depths["stage4_block1_pwconv1/kernel"] == 12
  assert depths["downsample4_norm/beta"] == 12 and num_depths(convnext) == 13
  swin = build_backbone("swin_test")
  depths = layer_depths(swin)
  assert depths["patch_embed_conv/kernel"] == 0 and depths["stage1_block1_norm1/gamma"] == 1
  assert depths["merge2_reduction/kernel"] == 3 == depths["stage2_block1_fc1/kernel"]
  assert depths["stage4_block2_attn/relative_position_bias_table"] == 8 == num_depths(swin) - 1
  resnet = build_backbone("resnet_test")
  assert layer_depths(resnet)["stage4_block3_3_conv/kernel"] == 9 == num_depths(resnet) - 1
  keras_resnet = build_backbone("keras_resnet50")
  assert layer_depths(keras_resnet)["conv1_conv/kernel"] == 0
  assert layer_depths(keras_resnet)["conv3_block1_1_conv/kernel"] == 4
  assert num_depths(keras_resnet) == 17


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED_BACKBONES))
def test_complexity_matches_papers(name):
  params, macs = PUBLISHED_BACKBONES[name]
  counted = backbone_complexity(name, 224, classifier_head=True)
  assert counted.params == pytest.approx(params, rel=0.02)
  assert counted.multiply_adds == pytest.approx(macs, rel=0.02)


@pytest.mark.parametrize("name", ["swin_test", "convnext_v2_test", "resnet_test"])
def test_config_round_trip(name):
  model = build_backbone(name)
  rebuilt = keras.Model.from_config(model.get_config())
  rebuilt.set_weights(model.get_weights())
  images = _images(35, 29)
  expected, got = model(images), rebuilt(images)
  for stride in expected:
    np.testing.assert_array_equal(got[stride].numpy(), expected[stride].numpy())
