"""Loads pretrained backbone weights from a file (local or gs://, read through tf.io.gfile; no
network: `pretrained.py` downloads): `load_backbone_weights`.

Supported files, detected from the extension and the names inside:
  * The original codebase's (iSeg's) released Keras 2 `.h5` files of ResNet-50/101, ConvNeXt(V2)
    and Swin, by the original's layer names (map and format in `iseg_h5.py`);
  * Keras `.weights.h5` (Keras 3) and legacy `.h5` (`save_weights` of Keras 2 / the published
    keras.applications files):
      - of our own backbones (e.g. the backbone of a finished run, `backbone.save_weights(...)`);
      - of `keras.applications.ResNet50/101` -> `keras_resnet50/101` (same layer names);
      - of `keras.applications.ConvNeXt*` -> `convnext_*`, by the layer map in `_KERAS_CONVNEXT`;
        the grouped-conv kernel [7, 7, 1, C] becomes the DepthwiseConv2D kernel [7, 7, C, 1].
  * Official PyTorch checkpoints of ConvNeXt, ConvNeXtV2 and Swin: `.safetensors` (read here with
    numpy: 8-byte little-endian header length, JSON header, raw buffers) or `.pth`/`.pt`/`.bin`
    (needs torch, an optional extra). Keys follow the official repositories, mapped onto our
    layers by `official_names.OFFICIAL_MODULES` (the table iSeg's files are read through too), with
    the layout changes conv OIHW -> HWIO, depthwise [C, 1, k, k] -> [k, k, C, 1], linear
    [out, in] -> [in, out], GRN (1, 1, 1, C) -> (C,).
    The prefixes "module." and "backbone." are stripped and a {"model"|"state_dict": ...} wrapper
    unwrapped, so mmsegmentation checkpoints load too.

Entries that are known not to belong to a backbone (classifier head, final norm, preprocessing
statistics, Swin's buffers `relative_position_index`/`attn_mask`) are ignored and reported. Every
other difference -- a backbone variable the file lacks, a file entry no variable takes, a shape
mismatch -- is collected into ONE error naming each variable with expected and found shapes, unless
`allow_partial=True`, in which case those variables are skipped, listed in the report and logged.
"""

import dataclasses
import io
import json
import re
import struct
from typing import Dict, List

import h5py
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from hfgd_tf.modeling.backbones import iseg_h5, official_names


@dataclasses.dataclass
class LoadReport:
  """What `load_backbone_weights` did; `skipped` is non-empty only with allow_partial=True."""
  source_format: str
  loaded: List[str] = dataclasses.field(default_factory=list)  # variable paths
  skipped: List[str] = dataclasses.field(default_factory=list)  # "what: why"
  ignored: List[str] = dataclasses.field(default_factory=list)  # file entries outside a backbone


# ------------------------------------------------------------------------------------------------
# Readers: file -> {name: array}.


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
                       "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
                       "BOOL": np.bool_}


def read_safetensors(path):
  """{name: array} from a .safetensors file (BF16 is widened to float32)."""
  with tf.io.gfile.GFile(path, "rb") as f:
    (header_size,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(header_size))
    buffer = f.read()
  tensors = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    begin, end = info["data_offsets"]
    raw = buffer[begin:end]
    if info["dtype"] == "BF16":  # bfloat16 = upper half of a float32
      bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
      array = bits.view(np.float32)
    elif info["dtype"] in _SAFETENSORS_DTYPES:
      dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
      array = np.frombuffer(raw, dtype=dtype)
    else:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    tensors[name] = array.reshape(info["shape"])
  return tensors


def _read_torch(path):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError(f"reading {path} needs torch (an optional extra: pip install torch), or "
                      "convert the checkpoint to .safetensors first") from error
  with tf.io.gfile.GFile(path, "rb") as f:
    state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
  for wrapper in ("model", "state_dict"):
    if isinstance(state.get(wrapper), dict):
      state = state[wrapper]
  return {name: (tensor.float() if tensor.is_floating_point() else tensor).numpy()
          for name, tensor in state.items() if isinstance(tensor, torch.Tensor)}


def read_keras_h5(f, path):
  """{layer name: [arrays in the layer's variable order]} from the Keras 3 or legacy .h5 file `f`
  (an h5py.File) read from `path`."""
  layers: Dict[str, List[np.ndarray]] = {}

  def add(layer_name, arrays):
    if not arrays:
      return
    if layer_name in layers:
      raise ValueError(f"{path}: layer name {layer_name!r} occurs twice; cannot map it")
    layers[layer_name] = arrays

  layer_names = iseg_h5.read_attribute_list(f.attrs, "layer_names")
  if layer_names:  # legacy (Keras 2 style) format
    for group_name in layer_names:
      by_layer: Dict[str, List[np.ndarray]] = {}
      for weight_name in iseg_h5.read_attribute_list(f[group_name].attrs, "weight_names"):
        # "outer/inner/kernel:0" or "layer/kernel:0": the owning layer is the second-to-last part.
        parts = weight_name.split("/")
        owner = parts[-2] if len(parts) > 1 else group_name
        by_layer.setdefault(owner, []).append(np.asarray(f[group_name][weight_name]))
      for owner, arrays in by_layer.items():
        add(owner, arrays)
  else:  # Keras 3 .weights.h5: groups ".../vars" named after their layer, datasets "0", "1", ...
    def visit(_, node):
      if isinstance(node, h5py.Group) and node.name.endswith("/vars") and "name" in node.attrs:
        add(_decode([node.attrs["name"]])[0],
            [np.asarray(node[str(i)]) for i in range(len(node))])
    f.visititems(visit)
  return layers


def _decode(values):
  return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


# ------------------------------------------------------------------------------------------------
# Name maps: source names -> "our_layer/var_name" keys, plus the layout change of each value.


def _conv(w):
  return np.transpose(w, (2, 3, 1, 0))  # [O, I, kh, kw] -> [kh, kw, I, O]


def _depthwise(w):
  return np.transpose(w, (2, 3, 0, 1))  # [C, 1, kh, kw] -> [kh, kw, C, 1]


def _linear(w):
  return np.transpose(w)  # [out, in] -> [in, out]


def _flat(w):
  return np.reshape(w, (-1,))  # GRN (1, 1, 1, C) -> (C,)


# Per kind of layer in official_names.OFFICIAL_MODULES: {official parameter: (our variable, layout
# change)}.
_TORCH_PARAMETERS = {
    "conv": {"weight": ("kernel", _conv), "bias": ("bias", None)},
    "norm": {"weight": ("gamma", None), "bias": ("beta", None)},
    "depthwise": {"weight": ("kernel", _depthwise), "bias": ("bias", None)},
    "linear": {"weight": ("kernel", _linear), "bias": ("bias", None)},
    "layer_scale": {"gamma": ("gamma", None)},
    "grn": {"gamma": ("gamma", _flat), "beta": ("beta", _flat)},
    "attention": {"relative_position_bias_table": ("relative_position_bias_table", None)},
}

# Official entries outside the backbone: classifier head, final norm (and mmseg's per-stage out
# norms), Swin's non-trainable buffers.
_TORCH_IGNORED = re.compile(
    r"(head\..*|norm\d?\.(weight|bias)|.*relative_position_index|.*attn_mask)")


def _convert_torch(state):
  """{official key: array} -> ({our key: array}, unexpected keys, ignored keys)."""
  converted, unexpected, ignored = {}, [], []
  for name, value in state.items():
    key = re.sub(r"^(module\.)?(backbone\.)?", "", name)
    ours = official_names.our_variable(key.replace(".", "/"), _TORCH_PARAMETERS)
    if ours:
      our_key, change = ours
      converted[our_key] = (change(value) if change else value, name)
    else:
      (ignored if _TORCH_IGNORED.fullmatch(key) else unexpected).append(name)
  return converted, unexpected, ignored


# keras.applications ConvNeXt layer names (prefix "convnext_tiny_" etc.) -> ours.
_KERAS_CONVNEXT = [
    (r"stem_conv", lambda m: "stem_conv"),
    (r"stem_layernorm", lambda m: "stem_norm"),
    (r"downsampling_layernorm_(\d+)", lambda m: f"downsample{int(m[1]) + 2}_norm"),
    (r"downsampling_conv_(\d+)", lambda m: f"downsample{int(m[1]) + 2}_conv"),
    (r"stage_(\d+)_block_(\d+)_(depthwise_conv|layernorm|pointwise_conv_1|pointwise_conv_2|"
     r"layer_scale)",
     lambda m: f"stage{int(m[1]) + 1}_block{int(m[2]) + 1}_" + {
         "depthwise_conv": "dwconv", "layernorm": "norm", "pointwise_conv_1": "pwconv1",
         "pointwise_conv_2": "pwconv2", "layer_scale": "layer_scale"}[m[3]]),
]
_KERAS_CONVNEXT_PREFIX = re.compile(r"convnext_(tiny|small|base|large|xlarge)_(.*)")
# The input Normalization, the notop model's final "layer_normalization", and the top's layers.
_KERAS_IGNORED = re.compile(r"(convnext_\w+_(prestem_normalization|head_layernorm)|"
                            r"layer_normalization|predictions|probs|fc1000)")


def _rename_keras_layer(name):
  match = _KERAS_CONVNEXT_PREFIX.fullmatch(name)
  if not match:
    return name
  for pattern, rename in _KERAS_CONVNEXT:
    inner = re.fullmatch(pattern, match[2])
    if inner:
      return rename(inner)
  return name


def _convert_keras(layers, slots):
  """{source layer: [arrays]} -> ({our key: array}, unexpected, ignored), in our variable order."""
  converted, unexpected, ignored = {}, [], []
  for source_layer, arrays in layers.items():
    layer = _rename_keras_layer(source_layer)
    if layer not in slots:
      (ignored if _KERAS_IGNORED.fullmatch(source_layer) else unexpected).extend(
          f"{source_layer}/{i}" for i in range(len(arrays)))
      continue
    variables = slots[layer]
    if len(variables) != len(arrays):
      unexpected.append(f"{source_layer}: {len(arrays)} arrays in the file, layer {layer!r} has "
                        f"{len(variables)} variables")
      continue
    for i, (variable, array) in enumerate(zip(variables, arrays)):
      if (source_layer != layer and variable.name == "kernel" and array.ndim == 4
          and array.shape[2] == 1 and len(variable.shape) == 4 and variable.shape[3] == 1):
        array = np.reshape(array, array.shape[:2] + (array.shape[3], 1))  # grouped -> depthwise
      converted[f"{layer}/{variable.name}"] = (array, f"{source_layer}/{i}")
  return converted, unexpected, ignored


# ------------------------------------------------------------------------------------------------
# Loading.


def variable_slots(model):
  """{layer name: [its own variables, in the order Keras saves them]} for every nested layer."""
  slots = {}
  # pylint: disable-next=protected-access
  for layer in model._flatten_layers(include_self=False, recursive=True):
    store = {}
    layer.save_own_variables(store)
    variables = [store[str(i)] for i in range(len(store))]
    if variables:
      if not all(isinstance(v, keras.Variable) for v in variables):
        raise TypeError(f"layer {layer.name!r} saves values, not variables; cannot load into it")
      slots[layer.name] = variables
  return slots


def read_backbone_weights(path, slots):
  """(format name, {our key: (array, source name)}, unexpected, ignored) for the file at `path`."""
  lower = path.lower()
  if lower.endswith(".safetensors"):
    return ("safetensors (official key names)",) + _convert_torch(read_safetensors(path))
  if lower.endswith((".pth", ".pt", ".bin")):
    return ("pytorch (official key names)",) + _convert_torch(_read_torch(path))
  if lower.endswith(".h5"):
    with iseg_h5.open_h5(path) as f:
      if iseg_h5.is_iseg_file(f):
        return (iseg_h5.FORMAT,) + iseg_h5.convert_groups(iseg_h5.read_groups(f))
      return ("keras h5",) + _convert_keras(read_keras_h5(f, path), slots)
  raise ValueError(f"{path}: unknown weight format; expected .weights.h5, .h5, .safetensors, .pth")


def load_backbone_weights(backbone, path, allow_partial=False) -> LoadReport:
  """Assigns the weights in the file at `path` to `backbone`'s variables; see the module docstring.

  Raises ValueError listing every missing, unexpected and mis-shaped variable unless
  `allow_partial`; then those are skipped and listed in the returned report. Nothing is assigned
  when an error is raised.
  """
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(path)
  slots = variable_slots(backbone)
  source_format, converted, unexpected, ignored = read_backbone_weights(path, slots)
  report = LoadReport(source_format, ignored=sorted(ignored))
  assignments, problems = match_weights(slots, converted, unexpected)
  if problems and not allow_partial:
    raise ValueError(f"{path} does not match backbone {backbone.name!r} ({len(problems)} "
                     "problems; pass allow_partial=True to skip them):\n  " + "\n  ".join(problems))
  if not assignments:
    raise ValueError(f"{path}: no variable of backbone {backbone.name!r} found in the file")
  for variable, array in assignments:
    variable.assign(array.astype(variable.dtype))
    report.loaded.append(variable.path)
  report.skipped = problems
  logging.info("Loaded %d backbone variables from %s (%s); %d file entries ignored.",
               len(report.loaded), path, source_format, len(report.ignored))
  for problem in problems:
    logging.warning("Skipped: %s", problem)
  return report


def match_weights(slots, converted, unexpected):
  """([(variable, array)] of the same shapes, [problem]) from `read_backbone_weights`' results.

  A problem is a variable the file lacks, a file entry no variable takes or a shape mismatch.
  """
  converted = dict(converted)
  problems, assignments = [], []
  for layer, variables in slots.items():
    for variable in variables:
      key = f"{layer}/{variable.name}"
      if key not in converted:
        problems.append(f"{variable.path}: expected shape {tuple(variable.shape)}, not in the file")
        continue
      array, source = converted.pop(key)
      if tuple(array.shape) != tuple(variable.shape):
        problems.append(f"{variable.path}: expected shape {tuple(variable.shape)}, found "
                        f"{tuple(array.shape)} in {source!r}")
        continue
      assignments.append((variable, array))
  problems += [f"{source}: shape {tuple(array.shape)} in the file, no variable {key!r} in the "
               "backbone" for key, (array, source) in converted.items()]
  problems += [f"{name}: in the file, not a variable of this backbone" for name in unexpected]
  return assignments, problems
