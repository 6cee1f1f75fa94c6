"""Loading backbone weights from Keras h5 files, official-key safetensors and our own files."""

import json
import os
import struct
import uuid

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from hfgd_tf.modeling.backbones import build_backbone, iseg_h5, official_names, weights
from hfgd_tf.modeling.backbones.weights import load_backbone_weights, read_safetensors
from tests import tiny_backbones

DATA = os.path.join(os.path.dirname(__file__), "data")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255


def _randomize(model, seed=0, skip=()):
  """Random values everywhere (also layer scales, BN statistics) so a misplaced tensor shows."""
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    if any(part in variable.path for part in skip):
      continue
    value = rng.normal(0.0, 0.2, variable.shape)
    if "moving_variance" in variable.path:
      value = rng.uniform(0.5, 1.5, variable.shape)
    variable.assign(value.astype("float32"))


def _images(height, width, batch=2, seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, 3)).astype("float32")


def _max_abs_diff(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def test_keras_applications_convnext_parity(tmp_path):
  reference = keras.applications.ConvNeXtTiny(include_top=False, weights=None,
                                              input_shape=(None, None, 3))
  _randomize(reference, skip=("prestem_normalization",))
  path = str(tmp_path / "convnext_tiny.weights.h5")
  reference.save_weights(path)
  ours = build_backbone("convnext_tiny")
  report = load_backbone_weights(ours, path)
  assert len(report.loaded) == len(ours.weights) and not report.skipped
  assert report.ignored == ["layer_normalization/0", "layer_normalization/1"]  # notop final norm

  # Stage outputs of the reference: inputs of its downsamplers and of its final LayerNorm. Its
  # own Normalization layer expects [0, 255] RGB; ours takes the already-normalised image.
  stages = [reference.get_layer(f"convnext_tiny_downsampling_block_{i}").input for i in range(3)]
  stages.append(reference.get_layer("layer_normalization").input)
  reference_stages = keras.Model(reference.input, stages)
  normalised = _images(64, 64)
  expected = reference_stages(normalised * IMAGENET_STD + IMAGENET_MEAN)
  features = ours(normalised)
  for stride, want in zip((4, 8, 16, 32), expected):
    assert _max_abs_diff(features[stride], want) < 1e-4, stride


@pytest.mark.parametrize("legacy", [False, True])
def test_keras_applications_resnet_parity(tmp_path, legacy):
  reference = keras.applications.ResNet50(include_top=False, weights=None,
                                          input_shape=(None, None, 3))
  _randomize(reference)
  if legacy:  # the layout of Keras' published .h5 files
    from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=import-outside-toplevel
    path = str(tmp_path / "resnet50.h5")
    with h5py.File(path, "w") as f:
      legacy_h5_format.save_weights_to_hdf5_group(f, reference)
  else:
    path = str(tmp_path / "resnet50.weights.h5")
    reference.save_weights(path)
  ours = build_backbone("keras_resnet50")
  report = load_backbone_weights(ours, path)
  assert len(report.loaded) == len(ours.weights) and not report.skipped and not report.ignored
  images = _images(64, 64)
  expected = keras.Model(reference.input, {
      4: reference.get_layer("conv2_block3_out").output,
      32: reference.get_layer("conv5_block3_out").output})(images)
  features = ours(images)
  for stride in (4, 32):
    assert _max_abs_diff(features[stride], expected[stride]) < 1e-4


# ------------------------------------------------------------------------------------------------
# Official PyTorch key names, written by the test in the torch layouts.


def _write_safetensors(path, tensors):
  header, offset, chunks = {}, 0, []
  for name, array in tensors.items():
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    header[name] = {"dtype": "F32", "shape": list(array.shape),
                    "data_offsets": [offset, offset + len(data)]}
    offset += len(data)
    chunks.append(data)
  encoded = json.dumps(header).encode("utf8")
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def _official_convnext(config):
  """{official key: (torch-layout shape, our variable path, torch -> ours)} for a ConvNeXt(V2)."""
  conv = lambda w: w.transpose(2, 3, 1, 0)  # noqa: E731
  linear = lambda w: w.T  # noqa: E731
  same = lambda w: w  # noqa: E731
  widths = config.widths
  keys = {
      "downsample_layers.0.0.weight": ((widths[0], 3, 4, 4), "stem_conv/kernel", conv),
      "downsample_layers.0.0.bias": ((widths[0],), "stem_conv/bias", same),
      "downsample_layers.0.1.weight": ((widths[0],), "stem_norm/gamma", same),
      "downsample_layers.0.1.bias": ((widths[0],), "stem_norm/beta", same),
  }
  for i in range(1, 4):
    keys[f"downsample_layers.{i}.0.weight"] = ((widths[i - 1],), f"downsample{i + 1}_norm/gamma",
                                               same)
    keys[f"downsample_layers.{i}.0.bias"] = ((widths[i - 1],), f"downsample{i + 1}_norm/beta", same)
    keys[f"downsample_layers.{i}.1.weight"] = ((widths[i], widths[i - 1], 2, 2),
                                               f"downsample{i + 1}_conv/kernel", conv)
    keys[f"downsample_layers.{i}.1.bias"] = ((widths[i],), f"downsample{i + 1}_conv/bias", same)
  for i, (depth, c) in enumerate(zip(config.depths, widths)):
    for j in range(depth):
      ours, official = f"stage{i + 1}_block{j + 1}", f"stages.{i}.{j}"
      keys.update({
          f"{official}.dwconv.weight": ((c, 1, 7, 7), f"{ours}_dwconv/kernel",
                                        lambda w: w.transpose(2, 3, 0, 1)),
          f"{official}.dwconv.bias": ((c,), f"{ours}_dwconv/bias", same),
          f"{official}.norm.weight": ((c,), f"{ours}_norm/gamma", same),
          f"{official}.norm.bias": ((c,), f"{ours}_norm/beta", same),
          f"{official}.pwconv1.weight": ((4 * c, c), f"{ours}_pwconv1/kernel", linear),
          f"{official}.pwconv1.bias": ((4 * c,), f"{ours}_pwconv1/bias", same),
          f"{official}.pwconv2.weight": ((c, 4 * c), f"{ours}_pwconv2/kernel", linear),
          f"{official}.pwconv2.bias": ((c,), f"{ours}_pwconv2/bias", same),
      })
      if config.grn:
        flat = lambda w: w.reshape(-1)  # noqa: E731
        keys[f"{official}.grn.gamma"] = ((1, 1, 1, 4 * c), f"{ours}_grn/gamma", flat)
        keys[f"{official}.grn.beta"] = ((1, 1, 1, 4 * c), f"{ours}_grn/beta", flat)
      else:
        keys[f"{official}.gamma"] = ((c,), f"{ours}_layer_scale/gamma", same)
  return keys


def _official_swin(config):
  conv = lambda w: w.transpose(2, 3, 1, 0)  # noqa: E731
  linear = lambda w: w.T  # noqa: E731
  same = lambda w: w  # noqa: E731
  c = config.embed_dim
  keys = {
      "patch_embed.proj.weight": ((c, 3, 4, 4), "patch_embed_conv/kernel", conv),
      "patch_embed.proj.bias": ((c,), "patch_embed_conv/bias", same),
      "patch_embed.norm.weight": ((c,), "patch_embed_norm/gamma", same),
      "patch_embed.norm.bias": ((c,), "patch_embed_norm/beta", same),
  }
  table = (2 * config.window_size - 1) ** 2
  for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads)):
    dim = c * 2 ** i
    for j in range(depth):
      ours, official = f"stage{i + 1}_block{j + 1}", f"layers.{i}.blocks.{j}"
      keys.update({
          f"{official}.norm1.weight": ((dim,), f"{ours}_norm1/gamma", same),
          f"{official}.norm1.bias": ((dim,), f"{ours}_norm1/beta", same),
          f"{official}.attn.relative_position_bias_table": (
              (table, heads), f"{ours}_attn/relative_position_bias_table", same),
          f"{official}.attn.qkv.weight": ((3 * dim, dim), f"{ours}_attn/{ours}_attn_qkv/kernel",
                                          linear),
          f"{official}.attn.qkv.bias": ((3 * dim,), f"{ours}_attn/{ours}_attn_qkv/bias", same),
          f"{official}.attn.proj.weight": ((dim, dim), f"{ours}_attn/{ours}_attn_proj/kernel",
                                           linear),
          f"{official}.attn.proj.bias": ((dim,), f"{ours}_attn/{ours}_attn_proj/bias", same),
          f"{official}.norm2.weight": ((dim,), f"{ours}_norm2/gamma", same),
          f"{official}.norm2.bias": ((dim,), f"{ours}_norm2/beta", same),
          f"{official}.mlp.fc1.weight": ((4 * dim, dim), f"{ours}_fc1/kernel", linear),
          f"{official}.mlp.fc1.bias": ((4 * dim,), f"{ours}_fc1/bias", same),
          f"{official}.mlp.fc2.weight": ((dim, 4 * dim), f"{ours}_fc2/kernel", linear),
          f"{official}.mlp.fc2.bias": ((dim,), f"{ours}_fc2/bias", same),
      })
    if i < 3:
      keys[f"layers.{i}.downsample.norm.weight"] = ((4 * dim,), f"merge{i + 2}_norm/gamma", same)
      keys[f"layers.{i}.downsample.norm.bias"] = ((4 * dim,), f"merge{i + 2}_norm/beta", same)
      keys[f"layers.{i}.downsample.reduction.weight"] = ((2 * dim, 4 * dim),
                                                         f"merge{i + 2}_reduction/kernel", linear)
  return keys


# Entries of official classification checkpoints that are not part of a backbone.
EXTRAS = {"norm.weight": (64,), "norm.bias": (64,), "head.weight": (10, 64), "head.bias": (10,)}
OFFICIAL = {
    "convnext_test": lambda: _official_convnext(tiny_backbones.CONVNEXT_TEST),
    "convnext_v2_test": lambda: _official_convnext(tiny_backbones.CONVNEXT_V2_TEST),
    "swin_test": lambda: _official_swin(tiny_backbones.SWIN_TEST),
}


def _official_file(tmp_path, name, drop=(), reshape=None, seed=0):
  rng = np.random.default_rng(seed)
  keys = OFFICIAL[name]()
  tensors = {key: rng.normal(size=shape).astype("float32") for key, (shape, _, _) in keys.items()
             if key not in drop}
  tensors.update({key: rng.normal(size=shape).astype("float32") for key, shape in EXTRAS.items()})
  if name == "swin_test":
    tensors["layers.0.blocks.0.attn.relative_position_index"] = np.zeros((81,), "float32")
  if reshape:
    key, shape = reshape
    tensors[key] = rng.normal(size=shape).astype("float32")
  path = str(tmp_path / f"{name}.safetensors")
  _write_safetensors(path, {f"backbone.{key}": value for key, value in tensors.items()})
  return path, keys, tensors


def test_safetensors_reader_round_trip(tmp_path):
  tensors = {"a": np.arange(6, dtype="float32").reshape(2, 3),
             "b": np.ones((1, 1, 1, 4), "float32")}
  _write_safetensors(tmp_path / "t.safetensors", tensors)
  read = read_safetensors(str(tmp_path / "t.safetensors"))
  assert set(read) == {"a", "b"}
  for key, value in tensors.items():
    np.testing.assert_array_equal(read[key], value)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_checkpoint_places_every_tensor(tmp_path, name):
  path, keys, tensors = _official_file(tmp_path, name)
  model = build_backbone(name)
  report = load_backbone_weights(model, path)
  variables = {v.path: v for v in model.weights}
  assert set(variables) == {target for _, target, _ in keys.values()}  # the map covers everything
  assert len(report.loaded) == len(variables) and not report.skipped
  assert set(report.ignored) >= {f"backbone.{key}" for key in EXTRAS}
  for key, (_, target, to_ours) in keys.items():
    np.testing.assert_array_equal(variables[target].numpy(), to_ours(tensors[key]), err_msg=key)


def test_official_layouts_compute_like_torch(tmp_path):
  """The converted stem conv and 7x7 depthwise conv give the torch (cross-correlation) results."""
  path, _, tensors = _official_file(tmp_path, "convnext_test")
  model = build_backbone("convnext_test")
  load_backbone_weights(model, path)
  rng = np.random.default_rng(3)
  image = rng.normal(size=(1, 8, 8, 3)).astype("float32")
  weight, bias = tensors["downsample_layers.0.0.weight"], tensors["downsample_layers.0.0.bias"]
  patches = image[0].reshape(2, 4, 2, 4, 3)  # [y, ky, x, kx, i]
  expected = np.einsum("ykxli,oikl->yxo", patches, weight) + bias
  np.testing.assert_allclose(model.get_layer("stem_conv")(image)[0], expected, rtol=1e-4,
                             atol=1e-4)
  features = rng.normal(size=(1, 9, 9, 8)).astype("float32")
  weight, bias = tensors["stages.0.0.dwconv.weight"], tensors["stages.0.0.dwconv.bias"]
  padded = np.pad(features[0], ((3, 3), (3, 3), (0, 0)))
  expected = bias + sum(padded[ky:ky + 9, kx:kx + 9] * weight[:, 0, ky, kx]
                        for ky in range(7) for kx in range(7))
  np.testing.assert_allclose(model.get_layer("stage1_block1_dwconv")(features)[0], expected,
                             rtol=1e-4, atol=1e-4)


def test_official_and_iseg_files_map_through_one_table_of_our_layer_names(monkeypatch):
  # Every kind of layer in the table is read by both formats ...
  kinds = {kind for _, _, kind in official_names.OFFICIAL_MODULES}
  assert set(weights._TORCH_PARAMETERS) == set(iseg_h5._PORTED_PARAMETERS) == kinds
  # ... and renaming one of our layers there renames it for both.
  monkeypatch.setattr(official_names, "OFFICIAL_MODULES", [
      (pattern, (lambda m: "renamed_dwconv") if kind == "depthwise" else layer, kind)
      for pattern, layer, kind in official_names.OFFICIAL_MODULES])
  official, _, _ = weights._convert_torch({"stages.0.0.dwconv.weight": np.zeros((4, 1, 7, 7))})
  ported, _, _ = iseg_h5.convert_groups(
      [("stages/0", [("stages/0/0/dwconv/depthwise_kernel:0", np.zeros((7, 7, 4, 1)))])])
  assert list(official) == list(ported) == ["renamed_dwconv/kernel"]
  assert official["renamed_dwconv/kernel"][0].shape == ported["renamed_dwconv/kernel"][0].shape


def test_shape_mismatch_names_variable_and_shapes(tmp_path):
  path, _, _ = _official_file(tmp_path, "swin_test",
                              reshape=("layers.1.blocks.0.attn.relative_position_bias_table",
                                       (49, 2)))
  model = build_backbone("swin_test")
  before = [v.numpy() for v in model.weights]
  with pytest.raises(ValueError) as error:
    load_backbone_weights(model, path)
  message = str(error.value)
  assert "stage2_block1_attn/relative_position_bias_table: expected shape (25, 2), found (49, 2)" \
      in message
  assert "1 problems" in message
  for variable, value in zip(model.weights, before):  # nothing assigned on error
    np.testing.assert_array_equal(variable.numpy(), value)


def test_partial_file_refused_unless_allowed(tmp_path):
  dropped = ("stages.3.0.pwconv2.weight", "stages.3.0.pwconv2.bias")
  path, _, _ = _official_file(tmp_path, "convnext_test", drop=dropped)
  model = build_backbone("convnext_test")
  with pytest.raises(ValueError, match=r"stage4_block1_pwconv2/kernel: expected shape \(256, 64\), "
                                       r"not in the file"):
    load_backbone_weights(model, path)
  kept = model.get_layer("stage4_block1_pwconv2").kernel.numpy()
  report = load_backbone_weights(model, path, allow_partial=True)
  assert sorted(report.skipped) == [
      "stage4_block1_pwconv2/bias: expected shape (64,), not in the file",
      "stage4_block1_pwconv2/kernel: expected shape (256, 64), not in the file"]
  assert len(report.loaded) == len(model.weights) - 2
  np.testing.assert_array_equal(model.get_layer("stage4_block1_pwconv2").kernel.numpy(), kept)


def test_wrong_family_lists_unexpected_and_missing(tmp_path):
  path, _, _ = _official_file(tmp_path, "convnext_test")
  with pytest.raises(ValueError) as error:
    load_backbone_weights(build_backbone("convnext_v2_test"), path)
  message = str(error.value)
  assert "stage1_block1_grn/gamma: expected shape (32,), not in the file" in message
  assert ("backbone.stages.0.0.gamma: shape (8,) in the file, no variable "
          "'stage1_block1_layer_scale/gamma' in the backbone") in message


@pytest.mark.parametrize("name", ["swin_test", "resnet_test"])
def test_own_weights_round_trip(tmp_path, name):
  source = build_backbone(name)
  _randomize(source, seed=5)
  path = str(tmp_path / f"{name}.weights.h5")
  source.save_weights(path)
  target = build_backbone(name)
  report = load_backbone_weights(target, path)
  assert len(report.loaded) == len(target.weights) and not report.skipped
  images = _images(37, 41)
  expected, got = source(images), target(images)
  for stride in expected:
    np.testing.assert_array_equal(got[stride].numpy(), expected[stride].numpy())


def test_unknown_format_and_missing_file(tmp_path):
  model = build_backbone("resnet_test")
  with pytest.raises(FileNotFoundError):
    load_backbone_weights(model, str(tmp_path / "absent.weights.h5"))
  (tmp_path / "weights.npz").write_bytes(b"")
  with pytest.raises(ValueError, match="unknown weight format"):
    load_backbone_weights(model, str(tmp_path / "weights.npz"))


def _file_of_format(tmp_path, kind):
  """(backbone name, local file) of weight file format `kind`, written by the test."""
  if kind == "iseg.h5":
    return "resnet_test", os.path.join(DATA, "iseg", "resnet_fixture.h5")  # its configuration
  if kind == "official.safetensors":
    return "convnext_test", _official_file(tmp_path, "convnext_test")[0]
  source = build_backbone("resnet_test")
  _randomize(source, seed=7)
  if kind == "own.weights.h5":
    path = str(tmp_path / "own.weights.h5")
    source.save_weights(path)
  elif kind == "legacy.h5":
    from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=import-outside-toplevel
    path = str(tmp_path / "legacy.h5")
    with h5py.File(path, "w") as f:
      legacy_h5_format.save_weights_to_hdf5_group(f, source)
  else:
    torch = pytest.importorskip("torch")
    path = str(tmp_path / "official.pth")
    _, _, tensors = _official_file(tmp_path, "convnext_test")
    torch.save({"state_dict": {f"backbone.{key}": torch.from_numpy(value)
                               for key, value in tensors.items()}}, path)
    return "convnext_test", path
  return "resnet_test", path


@pytest.mark.parametrize("kind", ["own.weights.h5", "legacy.h5", "iseg.h5", "official.safetensors",
                                  "official.pth"])
def test_every_format_loads_from_a_bucket_as_from_a_local_file(tmp_path, kind):
  """ram:// stands in for gs://: h5py reads through a tf.io.gfile stream, never the URL."""
  name, local = _file_of_format(tmp_path, kind)
  remote = f"ram://{uuid.uuid4().hex}/{os.path.basename(local)}"
  tf.io.gfile.copy(local, remote)
  from_disk, from_bucket = build_backbone(name), build_backbone(name)
  expected = load_backbone_weights(from_disk, local)
  report = load_backbone_weights(from_bucket, remote)
  assert report.source_format == expected.source_format
  assert len(report.loaded) == len(from_bucket.weights) and not report.skipped
  for want, got in zip(from_disk.weights, from_bucket.weights):
    np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.path)


def test_an_h5_file_in_a_bucket_is_read_in_one_request(tmp_path, monkeypatch):
  """h5py seeks through an .h5 file hundreds of times; on gs:// each read would be a request."""
  _, local = _file_of_format(tmp_path, "own.weights.h5")
  remote = f"ram://{uuid.uuid4().hex}/own.weights.h5"
  tf.io.gfile.copy(local, remote)
  reads = []

  class CountingGFile(tf.io.gfile.GFile):
    def read(self, n=-1):
      reads.append(n)
      return super().read(n)

  monkeypatch.setattr(tf.io.gfile, "GFile", CountingGFile)
  report = load_backbone_weights(build_backbone("resnet_test"), remote)
  assert report.loaded and reads == [-1]
