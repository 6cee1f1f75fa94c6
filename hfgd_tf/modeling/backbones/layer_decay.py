"""Depth of every backbone variable, for layer-wise learning-rate decay.

`layer_depths(backbone)` maps each `variable.path` to an integer depth; `num_depths(backbone)` is
one more than the deepest. A trainer scales a variable's learning rate by
decay ** (num_depths - depth), so heads (depth num_depths) keep the base rate. Schemes:
  * ConvNeXt(V2): the official `get_num_layer_layer_wise` of the segmentation code: stem 0, stage 1
    blocks 1, downsampler 2 + stage 2 blocks 2, downsampler 3 and stage 3 blocks 3 + (block // 3)
    (block counted from 0), downsampler 4 and stage 4 at the deepest level (12 for depth 27);
  * Swin: patch embedding 0, then every block its own depth 1..sum(depths); a patch merging shares
    the depth of the first block it feeds;
  * ResNet (both layouts): stem 0, then every bottleneck block its own depth 1..sum(blocks).
Depths are derived from the layer names the builders give, so they work for every size.
"""

import re

_STAGE_BLOCK = re.compile(r"stage(\d+)_block(\d+)_")  # ours: 1-based stage and block
_KERAS_RESNET_BLOCK = re.compile(r"conv(\d+)_block(\d+)_")  # keras.applications: conv2..conv5
_DOWNSAMPLE = re.compile(r"(downsample|merge)(\d+)_")


def _blocks_per_stage(names, pattern):
  blocks = {}
  for name in names:
    match = pattern.match(name)
    if match:
      stage, block = int(match[1]), int(match[2])
      blocks[stage] = max(blocks.get(stage, 0), block)
  return [blocks[stage] for stage in sorted(blocks)]


def _family(names):
  if "stem_conv" in names and "stage1_block1_dwconv" in names:
    return "convnext"
  if "patch_embed_conv" in names:
    return "swin"
  if "conv1_conv" in names:
    return "keras_resnet"
  if "stem_1_conv" in names:
    return "resnet"
  raise ValueError("not a backbone of this package: cannot tell its family from its layer names")


def _convnext_depth_fn(blocks):
  deepest = 3 + (blocks[2] - 1) // 3 + 1  # 12 for ConvNeXt-B/L/XL, as the official num_max_layer

  def depth(name):
    if name.startswith("stem_"):
      return 0
    match = _DOWNSAMPLE.match(name)
    if match:
      return {2: 2, 3: 3, 4: deepest}[int(match[2])]
    stage, block = map(int, _STAGE_BLOCK.match(name).groups())
    return {1: 1, 2: 2, 3: 3 + (block - 1) // 3, 4: deepest}[stage]
  return depth, deepest


def _sequential_depth_fn(blocks, block_pattern, first_stage):
  """Stem 0, then consecutive depths per block; downsamplers take the next block's depth."""
  offsets = [sum(blocks[:i]) for i in range(len(blocks))]

  def depth(name):
    match = block_pattern.match(name)
    if match:
      return offsets[int(match[1]) - first_stage] + int(match[2])
    match = _DOWNSAMPLE.match(name)
    if match:
      return offsets[int(match[2]) - first_stage] + 1
    return 0  # stem / patch embedding
  return depth, sum(blocks)


def _depth_fn(backbone):
  names = {layer.name for layer in backbone.layers}
  family = _family(names)
  if family == "keras_resnet":
    blocks = _blocks_per_stage(names, _KERAS_RESNET_BLOCK)
    return _sequential_depth_fn(blocks, _KERAS_RESNET_BLOCK, 2)
  blocks = _blocks_per_stage(names, _STAGE_BLOCK)
  if family == "convnext":
    return _convnext_depth_fn(blocks)
  return _sequential_depth_fn(blocks, _STAGE_BLOCK, 1)


def layer_depths(backbone):
  """{variable.path: depth} for every variable of `backbone` (see the module docstring)."""
  depth, _ = _depth_fn(backbone)
  return {variable.path: depth(layer.name) for layer in backbone.layers
          for variable in layer.weights}


def num_depths(backbone):
  """Number of depth levels of `backbone` (its deepest depth + 1): the depth to give the heads."""
  return _depth_fn(backbone)[1] + 1
