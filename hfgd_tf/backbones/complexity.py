"""Parameter and multiply-add counts of a backbone, from the real graph (TF profiler).

The profiler on a frozen concrete function counts 2 FLOPs per multiply-add (and a few FLOPs for
element-wise ops); papers' "FLOPs" are multiply-adds, so `macs` = profiler FLOPs / 2. Einsum would
count 0, which is why the attention in swin.py uses matmul. With `classifier_head` the count adds
what the papers' classification figures include: global average pooling, LayerNorm and a
1000-way Dense on the last features.
"""

import dataclasses

import keras
import tensorflow as tf

from hfgd_tf.backbones import build_backbone


@dataclasses.dataclass
class Complexity:
  params: int
  flops: int  # as the profiler counts them: 2 per multiply-add
  macs: float  # flops / 2, the papers' "FLOPs"


def count_model_flops(model, input_shape):
  """Profiler FLOPs of one call of `model` on a float32 input of `input_shape` (with batch)."""
  # pylint: disable=import-outside-toplevel
  from tensorflow.python.framework.convert_to_constants import (
      convert_variables_to_constants_v2)
  function = tf.function(lambda x: model(x, training=False))
  concrete = function.get_concrete_function(tf.TensorSpec(input_shape, tf.float32))
  frozen = convert_variables_to_constants_v2(concrete)
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  profile = tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(),
                                          cmd="op", options=options)
  return profile.total_float_ops


def with_classifier_head(backbone, num_classes=1000):
  """The backbone's last features -> global average pool -> LayerNorm -> Dense(num_classes)."""
  features = backbone.output[max(backbone.output)]
  pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
  normed = keras.layers.LayerNormalization(epsilon=1e-6, name="head_norm")(pooled)
  logits = keras.layers.Dense(num_classes, name="head_fc")(normed)
  return keras.Model(backbone.input, logits, name=f"{backbone.name}_classifier")


def count_backbone_flops(name, size=224, classifier_head=False):
  """Complexity of backbone `name` at size x size x 3 (batch 1), optionally with a classifier."""
  model = build_backbone(name)
  if classifier_head:
    model = with_classifier_head(model)
  flops = count_model_flops(model, (1, size, size, 3))
  return Complexity(params=model.count_params(), flops=flops, macs=flops / 2)
