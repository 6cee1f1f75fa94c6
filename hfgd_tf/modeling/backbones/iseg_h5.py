"""Reads the original codebase's (iSeg's) backbone weight files into our backbones' variable keys.

iSeg publishes its ImageNet backbones as Keras 2 legacy `.h5` weight files (`save_weights` of the
backbone model): root attribute `layer_names` lists the model's direct sublayers (ResNet
`conv1_1_conv` ... `conv5`, ConvNeXt `downsample_layers/i` and `stages/i`, Swin `patch_embed` and
`layers/i`), and each such group's attribute `weight_names` lists its arrays, stored at
`<layer>/<weight name>` (names holding `/` make nested HDF5 groups). Attributes over 64 KB are
split into `name0`, `name1`, ...; tf-keras >= 2.13 adds an empty `top_level_model_weights` group,
older Keras 2 does not.

Each array is mapped by the original's layer name and the rest of its weight name (any prefix
before the layer name is ignored, `:0` dropped) onto our layer/variable, exactly. ResNet (named
like keras.applications' ResNet):

  conv1_{i}_{conv,bn}                       -> stem_{i}_{conv,bn}
  conv{s}/.../conv{s}_block{b}_0_{conv,bn}  -> stage{s-1}_block{b}_shortcut_{conv,bn}
  conv{s}/.../conv{s}_block{b}_{k}_{conv,bn} -> stage{s-1}_block{b}_{k}_{conv,bn}   (k = 1, 2, 3)

ConvNeXt(V2) and Swin keep the official PyTorch module paths (`/` for `.`): their layers map by the
table the official checkpoints are read through too, `official_names.OFFICIAL_MODULES`, with
Keras's variable names (`depthwise_kernel` -> kernel; GRN's (1, 1, 1, 4C) arrays -> (4C,)).

The arrays are already in TF layouts. Swin's int64 `relative_position_index` buffers are compared
with the standard index (ours is computed, not stored): equal ones are ignored, others reported.
"""

import contextlib
import io
import re

import h5py
import numpy as np
import tensorflow as tf

from hfgd_tf import atomic_files
from hfgd_tf.modeling.backbones import official_names
from hfgd_tf.modeling.backbones.swin import relative_position_index

FORMAT = "iseg h5 (the original codebase's Keras 2 weights)"

# The direct sublayers of the original's backbones; a legacy h5 naming only these is an iSeg file.
_LAYER_NAME = re.compile(r"conv1_\d_(conv|bn)|pool1_pool|conv[2-5]|downsample_layers/\d+|"
                         r"stages/\d+|patch_embed|postional_dropout|layers/\d+")

_CONV_BN = r"(kernel|gamma|beta|moving_mean|moving_variance)"  # conv kernel or a BN array


def _flat(array):
  return np.reshape(array, (-1,))  # GRN (1, 1, 1, C) -> (C,)


# ResNet: (pattern of "<layer name>/<rest of the weight name>", our layer from the match); the
# pattern's last group is the variable name, ours too.
_RESNET_RULES = [
    (r"conv1_(\d)_(conv|bn)/" + _CONV_BN, lambda m: f"stem_{m[1]}_{m[2]}"),
    (r"conv(\d)/(?:.*/)?conv\1_block(\d+)_0_(conv|bn)/" + _CONV_BN,
     lambda m: f"stage{int(m[1]) - 1}_block{m[2]}_shortcut_{m[3]}"),
    (r"conv(\d)/(?:.*/)?conv\1_block(\d+)_([123])_(conv|bn)/" + _CONV_BN,
     lambda m: f"stage{int(m[1]) - 1}_block{m[2]}_{m[3]}_{m[4]}"),
]
# ConvNeXt and Swin, per kind of layer in official_names.OFFICIAL_MODULES: {Keras variable name:
# (ours, layout change)}.
_PORTED_PARAMETERS = {
    "conv": {"kernel": ("kernel", None), "bias": ("bias", None)},
    "norm": {"gamma": ("gamma", None), "beta": ("beta", None)},
    "depthwise": {"depthwise_kernel": ("kernel", None), "bias": ("bias", None)},
    "linear": {"kernel": ("kernel", None), "bias": ("bias", None)},
    "layer_scale": {"gamma": ("gamma", None)},
    "grn": {"gamma": ("gamma", _flat), "beta": ("beta", _flat)},
    "attention": {"relative_position_bias_table": ("relative_position_bias_table", None)},
}


def _our_variable(name):
  """(our "layer/variable" key, layout change or None) of a '<layer>/<rest>' name, or None."""
  for pattern, our_layer in _RESNET_RULES:
    match = re.fullmatch(pattern, name)
    if match:
      return f"{our_layer(match)}/{match[match.lastindex]}", None
  return official_names.our_variable(name, _PORTED_PARAMETERS)


_INDEX = re.compile(r"layers/\d+/blocks/\d+/attn/relative_position_index")


def read_attribute_list(attrs, name):
  """The string list attribute `name`, joined from Keras 2's chunks `name0`, `name1`, ..."""
  if name in attrs:
    values = list(attrs[name])
  else:
    values, chunk = [], 0
    while f"{name}{chunk}" in attrs:
      values += list(attrs[f"{name}{chunk}"])
      chunk += 1
  return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def is_iseg_file(h5_file):
  """True for a legacy h5 whose `layer_names` are all direct sublayers of an iSeg backbone."""
  names = read_attribute_list(h5_file.attrs, "layer_names")
  return bool(names) and all(_LAYER_NAME.fullmatch(name) for name in names)


def read_groups(h5_file):
  """[(layer name, [(weight name, array), ...]), ...] in file order, read by the name lists."""
  groups = []
  for layer in read_attribute_list(h5_file.attrs, "layer_names"):
    group = h5_file[layer]
    groups.append((layer, [(name, np.asarray(group[name]))
                           for name in read_attribute_list(group.attrs, "weight_names")]))
  return groups


def _relative_name(layer, weight_name):
  """'<layer>/<rest>' without ':0' and without anything written before the layer's own name."""
  name = re.sub(r":\d+$", "", weight_name)
  start = name.rfind(layer + "/")
  return name[start:] if start >= 0 else f"{layer}/{name}"


def convert_groups(groups):
  """[(layer, [(weight name, array)])] -> ({our key: (array, source)}, unexpected, ignored)."""
  converted, unexpected, ignored = {}, [], []
  for layer, weights in groups:
    for weight_name, array in weights:
      name = _relative_name(layer, weight_name)
      source = f"{layer}/{weight_name}"
      if _INDEX.fullmatch(name):
        window = int(round(np.sqrt(array.shape[0]))) if array.ndim == 2 else 0
        if window and np.array_equal(array, relative_position_index(window)):
          ignored.append(source)
        else:
          unexpected.append(f"{source} (shape {array.shape}): not the standard relative position "
                            "index that this backbone computes")
        continue
      ours = _our_variable(name)
      if ours is None:
        unexpected.append(source)
        continue
      key, change = ours
      if key in converted:
        unexpected.append(f"{source}: a second array for {key!r}")
      else:
        converted[key] = (change(array) if change else np.asarray(array), source)
  return converted, unexpected, ignored


@contextlib.contextmanager
def open_h5(path):
  """The HDF5 file at `path` (an h5py.File to read) on any filesystem TensorFlow knows.

  h5py opens local names only and reads a weights file by thousands of seeks (2,172 reads to load
  ResNet-50's .weights.h5), each one request on a bucket: a remote file is read once, whole,
  through tf.io.gfile into memory; a local one is streamed through tf.io.gfile.
  """
  if atomic_files.is_local(path):
    with tf.io.gfile.GFile(path, "rb") as stream, h5py.File(stream, "r") as h5_file:
      yield h5_file
  else:
    with h5py.File(io.BytesIO(atomic_files.read_bytes(path)), "r") as h5_file:
      yield h5_file
