"""FLOPs and parameter counts from the real graph, split per paper component.

The model's inference function is traced at a fixed input size, its variables frozen into
constants, and every op's FLOPs read from TensorFlow's registered statistics (what the TF profiler
reports: 2 FLOPs per multiply-add for convolutions and matmuls, 1 per element for additions, BN,
softmax, pooling). Multiply-adds (the paper's "GFLOPs", where 1 multiply-add = 1) are half the
FLOPs of the convolution and matmul ops. Attention is written with matmul, never einsum, which the
profiler would count as 0. Ops are attributed to a component by their name scope
(`hfgd/backbone/...`, `hfgd/encoder/...`).
"""

import collections
import dataclasses
import re
from typing import Dict

import keras
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops  # pylint: disable=no-name-in-module
from tensorflow.python.framework.convert_to_constants import (  # pylint: disable=no-name-in-module
    convert_variables_to_constants_v2)
from tensorflow.python.util import deprecation  # pylint: disable=no-name-in-module

MULTIPLY_ADD_OPS = ("Conv2D", "DepthwiseConv2dNative", "Conv2DBackpropInput", "MatMul",
                    "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")


@dataclasses.dataclass
class Complexity:
  """Multiply-adds, raw FLOPs and parameters of one component."""
  multiply_adds: int = 0
  flops: int = 0
  params: int = 0


def op_flops(graph, op):
  """FLOPs of one op from TF's registered statistics (0 where none is registered)."""
  try:
    value = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
  except ValueError:  # shapes unknown for this op
    return 0
  value = int(value or 0)
  if op.type == "Conv2D" and op.inputs[0].op.type == "SpaceToBatchND":
    value = _dilated_conv_flops(op, value)
  return value


def _dilated_conv_flops(op, space_to_batch_flops):
  """FLOPs of a dilated convolution at its logical output size.

  TF runs dilated convolutions as SpaceToBatchND -> Conv2D -> BatchToSpaceND, whose Conv2D works
  on the padded, rearranged tensor and over-counts (by ~1.5x at rate 16 on 65x65). The logical
  output is what BatchToSpaceND returns after cropping.
  """
  consumers = list(op.outputs[0].consumers())
  while consumers and consumers[0].type != "BatchToSpaceND" and len(consumers) == 1:
    consumers = list(consumers[0].outputs[0].consumers())
  if not consumers or consumers[0].type != "BatchToSpaceND":
    return space_to_batch_flops
  logical = consumers[0].outputs[0].shape.num_elements()
  padded = op.outputs[0].shape.num_elements()
  return space_to_batch_flops * logical // padded


def frozen_graph(function, input_shape, dtype=tf.float32):
  """The graph of `function` traced on one input of `input_shape`, variables as constants."""
  concrete = tf.function(function).get_concrete_function(tf.TensorSpec(input_shape, dtype))
  with deprecation.silence():  # the freezing helper warns that it was designed for TF1
    return convert_variables_to_constants_v2(concrete).graph


def graph_complexity(graph, component_of=lambda name: "total"):
  """{component: Complexity} over the ops of `graph`, grouped by `component_of(op.name)`."""
  totals = collections.defaultdict(Complexity)
  for op in graph.get_operations():
    with deprecation.silence():  # TF's shape helper for the statistics warns on every call
      flops = op_flops(graph, op)
    if not flops:
      continue
    entry = totals[component_of(op.name)]
    entry.flops += flops
    if op.type in MULTIPLY_ADD_OPS:
      entry.multiply_adds += flops // 2
  return dict(totals)


def _component_of_op(components):
  """Maps an op name like 'hfgd_1/decoder_1/lateral4_1/...' to its component (or 'other')."""
  scopes = {layer.name: name for name, layer in components.items()}

  def component_of(name):
    parts = name.split("/")
    scope = re.sub(r"_\d+$", "", parts[1]) if len(parts) > 2 else ""
    return scopes.get(scope, "other")
  return component_of


def count_params(layer):
  return sum(int(tf.size(variable)) for variable in layer.trainable_variables)


def model_complexity(model, height=513, width=513) -> Dict[str, Complexity]:
  """Per-component complexity of a SegmentationModel's inference at [1, height, width, 3].

  Components follow `model.components()` (backbone, encoder, decoder, hfgm, classifier); 'other'
  holds what sits outside them (the final resize of the logits); 'total' sums everything.
  """
  components = model.components()
  graph = frozen_graph(lambda images: model(images, training=False), [1, height, width, 3])
  report = graph_complexity(graph, _component_of_op(components))
  for name, layer in components.items():
    report.setdefault(name, Complexity()).params = count_params(layer)
  total = Complexity()
  for entry in report.values():
    total.multiply_adds += entry.multiply_adds
    total.flops += entry.flops
    total.params += entry.params
  order = list(components) + ["other"]
  ordered = {name: report[name] for name in order if name in report}
  ordered["total"] = total
  return ordered


def format_complexity(report, title):
  """A table of GMACs ("GFLOPs" as the paper counts), raw GFLOPs and parameters (M)."""
  lines = [title, f"{'component':<12}{'GFLOPs (MACs)':>15}{'raw GFLOPs':>13}{'params (M)':>12}"]
  for name, entry in report.items():
    lines.append(f"{name:<12}{entry.multiply_adds / 1e9:>15.2f}{entry.flops / 1e9:>13.2f}"
                 f"{entry.params / 1e6:>12.2f}")
  return "\n".join(lines)


# Published classification figures at 224x224 (params, multiply-adds) of the SOTA backbones:
# Swin-L (Liu et al. 2021, Table 1), ConvNeXt-L (Liu et al. 2022, Table 1), ConvNeXtV2-L
# (Woo et al. 2023, Table 12).
PUBLISHED_BACKBONES = {
    "swin_large_224": (197e6, 34.5e9),
    "convnext_large": (198e6, 34.4e9),
    "convnext_v2_large": (198e6, 34.4e9),
}


def with_classifier_head(backbone, num_classes=1000):
  """Backbone -> global average pool -> LayerNorm -> Dense: what classification figures count."""
  features = backbone.output[max(backbone.output)]
  pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
  normed = keras.layers.LayerNormalization(epsilon=1e-6, name="head_norm")(pooled)
  logits = keras.layers.Dense(num_classes, name="head_fc")(normed)
  return keras.Model(backbone.input, logits, name=f"{backbone.name}_classifier")


def backbone_complexity(name, size=224, classifier_head=True):
  """Complexity of backbone `name` at size x size x 3, with a 1000-way head by default so it
  compares with the backbones' published ImageNet figures."""
  from hfgd_tf.modeling.backbones import build_backbone  # pylint: disable=import-outside-toplevel
  model = build_backbone(name)
  if classifier_head:
    model = with_classifier_head(model)
  graph = frozen_graph(lambda images: model(images, training=False), [1, size, size, 3])
  complexity = graph_complexity(graph)["total"]
  complexity.params = count_params(model)
  return complexity


def format_backbone_complexity(names, size=224):
  """A table of each backbone's params and multiply-adds against its published figures."""
  lines = [f"Backbones with a 1000-way classifier at {size}x{size}x3",
           f"{'backbone':<20}{'params (M)':>11}{'published':>11}{'GMACs':>9}{'published':>11}"]
  for name in names:
    entry = backbone_complexity(name, size)
    params, macs = PUBLISHED_BACKBONES.get(name, (float("nan"), float("nan")))
    lines.append(f"{name:<20}{entry.params / 1e6:>11.2f}{params / 1e6:>11.1f}"
                 f"{entry.multiply_adds / 1e9:>9.2f}{macs / 1e9:>11.1f}")
  return "\n".join(lines)
