"""The original codebase's (iSeg's) backbone weight files: small fixtures written by the original
code (tests/data/iseg/, see its manifest.json) reproduce the original's endpoints in our backbones,
and the structures of the five full-size released files map completely onto our full-size ones."""

import os
import re

import h5py
import keras
import numpy as np
import pytest

from hfgd_tf.modeling.backbones import build_backbone, convnext, iseg_h5, resnet, swin
from hfgd_tf.modeling.backbones.weights import load_backbone_weights, match_weights, variable_slots

DATA = os.path.join(os.path.dirname(__file__), "data", "iseg")

# Fixture -> (our builder of the same configuration, {endpoint index of the original: our stride}).
_CONVNEXT_STRIDES = {1: 4, 2: 8, 3: 16, 4: 32}
FIXTURES = {
    "resnet_fixture": (lambda: resnet.build_resnet(resnet.ResNetConfig(
        blocks=(2, 2, 2, 3), widths=(8, 16, 32, 64), stem_widths=(8, 8, 16))),
                       {0: 2, 1: 4, 2: 8, 3: 16, 4: 32}),
    "convnext_fixture": (lambda: convnext.build_convnext(convnext.ConvNeXtConfig(
        (1, 1, 2, 1), (8, 16, 32, 64), 0.1)), _CONVNEXT_STRIDES),
    "convnext_v2_fixture": (lambda: convnext.build_convnext(convnext.ConvNeXtConfig(
        (1, 1, 2, 1), (8, 16, 32, 64), 0.1, grn=True, layer_scale_init=None)), _CONVNEXT_STRIDES),
    # Endpoint 0 of Swin (the patch embedding) has no stride key of ours.
    "swin_w7_fixture": (lambda: swin.build_swin(swin.SwinConfig(12, (2, 2, 2, 2), (1, 2, 3, 4), 7)),
                        _CONVNEXT_STRIDES),
    "swin_w12_fixture": (lambda: swin.build_swin(swin.SwinConfig(6, (2, 2, 2, 2), (1, 2, 3, 4),
                                                                 12)), _CONVNEXT_STRIDES),
}


def _fixture(name):
  return os.path.join(DATA, f"{name}.h5")


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_reproduces_the_original_endpoints(name):
  build, strides = FIXTURES[name]
  model = build()
  report = load_backbone_weights(model, _fixture(name))
  assert report.source_format == iseg_h5.FORMAT
  assert len(report.loaded) == len(model.weights) and not report.skipped
  assert all("relative_position_index" in entry for entry in report.ignored)
  expected = np.load(os.path.join(DATA, f"{name}_endpoints.npz"))
  features = model(expected["input"], training=False)
  for index, stride in strides.items():
    want = expected[f"endpoint_{index}"]
    got = features[stride].numpy()
    assert got.shape == want.shape, (index, stride)
    # Relative to the endpoint's largest value: magnitudes grow ~20x with depth. The bound holds
    # ConvNeXtV2's GRN epsilon difference (the original puts it inside the square root: < 6e-7).
    error = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert error < 2e-6, (index, stride, error)


def _rewrite(source, target, chunks=1, top_level=True, prefix="", edit=None):
  """Writes the fixture `source` again in the legacy layout, with `chunks` chunks per name list,
  with or without `top_level_model_weights`, `prefix` before every weight name, and `edit`
  ({weight name: new array or None to drop}) applied."""
  with h5py.File(source, "r") as f:
    groups = iseg_h5.read_groups(f)
    attrs = dict(f.attrs)

  def write_list(node, key, values):
    encoded = np.array([v.encode("utf8") for v in values])
    if chunks == 1:
      node.attrs[key] = encoded
    else:
      for i, part in enumerate(np.array_split(encoded, chunks)):
        node.attrs[f"{key}{i}"] = part

  with h5py.File(target, "w") as f:
    f.attrs["backend"], f.attrs["keras_version"] = attrs["backend"], "2.9.0"
    write_list(f, "layer_names", [layer for layer, _ in groups])
    for layer, weights in groups:
      group = f.create_group(layer)
      names = []
      for weight_name, array in weights:
        if edit and weight_name in edit:
          array = edit[weight_name]
          if array is None:
            continue
        names.append(prefix + weight_name)
        group[prefix + weight_name] = array
      write_list(group, "weight_names", names)
    if top_level:
      f.create_group("top_level_model_weights")


@pytest.mark.parametrize("chunks, top_level, prefix", [(3, False, ""), (1, True, "backbone/"),
                                                       (2, True, "model_1/")])
def test_file_layout_variants_load_the_same_values(tmp_path, chunks, top_level, prefix):
  """Chunked name lists, no `top_level_model_weights` (Keras 2 before 2.13), prefixed names."""
  reference = FIXTURES["swin_w7_fixture"][0]()
  load_backbone_weights(reference, _fixture("swin_w7_fixture"))
  path = str(tmp_path / "variant.h5")
  _rewrite(_fixture("swin_w7_fixture"), path, chunks, top_level, prefix)
  model = FIXTURES["swin_w7_fixture"][0]()
  report = load_backbone_weights(model, path)
  assert len(report.loaded) == len(model.weights) and not report.skipped
  for got, want in zip(model.weights, reference.weights):
    np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.path)


def test_missing_extra_and_misshaped_arrays_are_all_reported_and_nothing_assigned(tmp_path):
  edit = {"conv2/conv2_block1/conv2_block1_0_conv/kernel:0": None,
          "conv3/conv3_block2/conv3_block2_1_bn/gamma:0": np.ones((5,), "float32")}
  path = str(tmp_path / "edited.h5")
  _rewrite(_fixture("resnet_fixture"), path, edit=edit)
  with h5py.File(path, "a") as f:  # an array no variable of ours takes
    names = list(f["conv5"].attrs["weight_names"]) + [b"conv5/conv5_block1/extra/kernel:0"]
    f["conv5"].attrs["weight_names"] = np.array(names)
    f["conv5/conv5/conv5_block1/extra/kernel:0"] = np.zeros((2,), "float32")
  model = FIXTURES["resnet_fixture"][0]()
  before = [v.numpy() for v in model.weights]
  with pytest.raises(ValueError) as error:
    load_backbone_weights(model, path)
  message = str(error.value)
  assert "(3 problems" in message
  assert "stage1_block1_shortcut_conv/kernel: expected shape (1, 1, 16, 32), not in the file" \
      in message
  assert ("stage2_block2_1_bn/gamma: expected shape (16,), found (5,) in "
          "'conv3/conv3/conv3_block2/conv3_block2_1_bn/gamma:0'") in message
  assert "conv5/conv5/conv5_block1/extra/kernel:0: in the file, not a variable" in message
  for variable, value in zip(model.weights, before):
    np.testing.assert_array_equal(variable.numpy(), value)


def test_wrong_window_and_nonstandard_index_are_reported(tmp_path):
  with pytest.raises(ValueError, match=r"stage1_block1_attn/relative_position_bias_table: "
                                       r"expected shape \(529, 1\), found \(169, 1\)"):
    load_backbone_weights(FIXTURES["swin_w12_fixture"][0](), _fixture("swin_w7_fixture"))
  index = "layers/0/blocks/1/attn/relative_position_index:0"
  path = str(tmp_path / "index.h5")
  _rewrite(_fixture("swin_w7_fixture"), path,
           edit={index: np.zeros((49, 49), "int64")})
  with pytest.raises(ValueError, match="not the standard relative position index"):
    load_backbone_weights(FIXTURES["swin_w7_fixture"][0](), path)


# ------------------------------------------------------------------------------------------------
# Full-size structures (names, shapes, dtypes; no values) of the released files.


def _structure_groups(name):
  """[(layer, [(weight name, zero-cost array of the file's shape)])] from a structure dump; the
  int64 Swin indices get the standard index (the released values are that index)."""
  groups, current = [], None
  with open(os.path.join(DATA, "full_size", f"{name}_h5_structure.txt")) as f:
    for line in f:
      if line.startswith("## every HDF5 object"):
        break
      header = re.fullmatch(r"\[(.+)\] \d+ weights\n", line)
      if header:
        current = (header[1], [])
        groups.append(current)
        continue
      entry = re.fullmatch(r"  (\S+)\t\(([\d, ]*)\)\t(\w+)\n", line)
      if entry:
        shape = tuple(int(d) for d in entry[2].replace(" ", "").split(",") if d)
        if entry[3] == "int64":
          array = swin.relative_position_index(int(round(np.sqrt(shape[0]))))
        else:
          array = np.broadcast_to(np.zeros((), entry[3]), shape)
        current[1].append((entry[1], array))
  return groups


@pytest.mark.parametrize("name", ["resnet50", "resnet101", "convnext_large", "convnext_v2_large",
                                  "swin_large_384"])
def test_full_size_structure_maps_onto_every_variable(name):
  groups = _structure_groups(name)
  num_arrays = sum(len(weights) for _, weights in groups)
  # Variables with names and shapes but no values: ~630 MB peak for ConvNeXt-L as for no model,
  # against ~1.5 GB when its 196M values are allocated.
  with keras.StatelessScope(initialize_variables=False):
    model = build_backbone(name)
  slots = variable_slots(model)
  converted, unexpected, ignored = iseg_h5.convert_groups(groups)
  assignments, problems = match_weights(slots, converted, unexpected)
  assert not problems
  assert len(assignments) == len(model.weights) == num_arrays - len(ignored)
  assert len(ignored) == (24 if name == "swin_large_384" else 0)
