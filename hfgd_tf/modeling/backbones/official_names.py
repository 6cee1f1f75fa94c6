"""Our ConvNeXt(V2) and Swin layer names by the module paths of the official PyTorch models.

iSeg's Keras ports of these backbones keep the official module paths (`stages/0/1/dwconv` for
`stages.0.1.dwconv`), so this one table serves both the official checkpoints (`weights.py`) and
iSeg's h5 files (`iseg_h5.py`): renaming one of our layers is one edit, here. Each format says, per
kind of layer, which of its parameter names holds which of our variables and how the layout changes.
"""

import re


def _block(match):
  return f"stage{int(match[1]) + 1}_block{int(match[2]) + 1}"  # 0-based there, 1-based here


# (pattern of an official module path with "/" separators, our layer name from the match, kind).
OFFICIAL_MODULES = [
    # ConvNeXt / ConvNeXtV2
    (r"downsample_layers/0/0", lambda m: "stem_conv", "conv"),
    (r"downsample_layers/0/1", lambda m: "stem_norm", "norm"),
    (r"downsample_layers/(\d+)/0", lambda m: f"downsample{int(m[1]) + 1}_norm", "norm"),
    (r"downsample_layers/(\d+)/1", lambda m: f"downsample{int(m[1]) + 1}_conv", "conv"),
    (r"stages/(\d+)/(\d+)", lambda m: f"{_block(m)}_layer_scale", "layer_scale"),
    (r"stages/(\d+)/(\d+)/dwconv", lambda m: f"{_block(m)}_dwconv", "depthwise"),
    (r"stages/(\d+)/(\d+)/norm", lambda m: f"{_block(m)}_norm", "norm"),
    (r"stages/(\d+)/(\d+)/(pwconv[12])", lambda m: f"{_block(m)}_{m[3]}", "linear"),
    (r"stages/(\d+)/(\d+)/grn", lambda m: f"{_block(m)}_grn", "grn"),
    # Swin
    (r"patch_embed/proj", lambda m: "patch_embed_conv", "conv"),
    (r"patch_embed/norm", lambda m: "patch_embed_norm", "norm"),
    (r"layers/(\d+)/blocks/(\d+)/(norm[12])", lambda m: f"{_block(m)}_{m[3]}", "norm"),
    (r"layers/(\d+)/blocks/(\d+)/attn", lambda m: f"{_block(m)}_attn", "attention"),
    (r"layers/(\d+)/blocks/(\d+)/attn/(qkv|proj)", lambda m: f"{_block(m)}_attn_{m[3]}",
     "linear"),
    (r"layers/(\d+)/blocks/(\d+)/mlp/(fc[12])", lambda m: f"{_block(m)}_{m[3]}", "linear"),
    (r"layers/(\d+)/downsample/norm", lambda m: f"merge{int(m[1]) + 2}_norm", "norm"),
    (r"layers/(\d+)/downsample/reduction", lambda m: f"merge{int(m[1]) + 2}_reduction",
     "linear"),
]


def our_variable(name, parameters):
  """(our "layer/variable" key, layout change) of the official `name` ("<module path>/<parameter>",
  "/" separators), or None when no row or no parameter of its kind takes it. `parameters`:
  {kind: {parameter name: (our variable name, layout change or None)}}, the file format's."""
  module, _, parameter = name.rpartition("/")
  for pattern, layer, kind in OFFICIAL_MODULES:
    match = re.fullmatch(pattern, module)
    if match:
      if parameter not in parameters[kind]:
        return None
      variable, change = parameters[kind][parameter]
      return f"{layer(match)}/{variable}", change
  return None
