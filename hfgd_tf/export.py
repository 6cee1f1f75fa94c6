"""SavedModel export with the normalisation and the inference protocol inside.

The SavedModel (plain `tf.saved_model.save` of a `tf.Module`, loadable with TensorFlow alone, no
project code) has two signatures, both taking `images`: uint8 [N, H, W, 3] of any N, H, W:
  serving_default -> {"class_map": int32 [N, H, W]}
  probabilities   -> {"class_map": int32 [N, H, W], "probabilities": float32 [N, H, W, K]}
Inside: x*2/255 - 1, then `inference.model_logits` with the export's scales, flip and window (the
single-scale or the MS+flip protocol), argmax / softmax at the input resolution. The same two
functions are also attributes of the loaded object (`loaded.class_map(images)`, ...).

Batch norm is folded into the convolution before it (`fold_batch_norms`, on by default): at
inference BN is a per-channel affine map, so conv -> BN equals one conv with scaled kernel and a
bias, which oneDNN and cuDNN fuse with the ReLU after it. Same logits to float rounding (~1e-6).

`export_info.json` beside `saved_model.pb` records the classes, palette and protocol. The export is
written to a temporary sibling directory and moved into place (`atomic_files.publish_dir`), so the
final path never holds a half-written model, on a local disk or in a bucket.
"""

import dataclasses
import json
import os
from typing import Optional, Sequence

import keras
import tensorflow as tf
from absl import logging

from hfgd_tf import atomic_files, inference
from hfgd_tf.inference import SS_SCALES
from hfgd_tf.modeling.layers.common import ConvNormAct
from hfgd_tf.modeling.model import build_model
from hfgd_tf.ops import normalize_image

SERVING_SIGNATURE = "serving_default"
PROBABILITIES_SIGNATURE = "probabilities"
INFO_FILE = "export_info.json"


def _conv_norm_pairs(model):
  """(conv, batch norm) pairs where the norm reads only that conv's output: ConvNormAct layers and
  Conv2D -> BatchNormalization edges of functional sub-models (the ResNet backbone)."""
  pairs = {}
  for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
    if isinstance(layer, ConvNormAct):
      pairs[id(layer.norm)] = (layer.conv, layer.norm)
    elif isinstance(layer, keras.layers.BatchNormalization) and len(layer._inbound_nodes) == 1:
      inputs = layer._inbound_nodes[0].input_tensors  # pylint: disable=protected-access
      conv = inputs[0]._keras_history.operation if len(inputs) == 1 else None
      if (type(conv) is keras.layers.Conv2D  # pylint: disable=unidiomatic-typecheck
          and len(conv._outbound_nodes) == 1):  # pylint: disable=protected-access
        pairs[id(layer)] = (conv, layer)
  return list(pairs.values())


def fold_batch_norms(model):
  """An inference copy of `model` with every conv -> BN pair folded into the conv; returns
  (copy, folded biases: variables the copy reads, which an export must track).

  BN at inference: y = (x - mean) * s + beta with s = gamma / sqrt(var + eps), per channel; with
  x = conv(z, K) (+ b), y = conv(z, K * s) + (b - mean) * s + beta. The conv's kernel takes the
  scale; the norm layer of the copy becomes an add of that bias. `model` is left untouched.
  """
  folded = build_model(dataclasses.replace(model.config, sync_batch_norm=False))
  folded.set_weights(model.get_weights())
  biases = []
  for conv, norm in _conv_norm_pairs(folded):
    if norm.axis not in (-1, 3):
      continue  # only a channels-last (NHWC) norm folds into the kernel's output axis
    gamma = norm.gamma.value if norm.scale else 1.0
    beta = norm.beta.value if norm.center else 0.0
    scale = gamma * tf.math.rsqrt(norm.moving_variance.value + norm.epsilon)  # [C_out]
    bias = beta - norm.moving_mean.value * scale
    if conv.use_bias:
      bias += conv.bias.value * scale
    conv.kernel.assign(conv.kernel.value * scale)  # [kh, kw, C_in, C_out] * [C_out]
    bias = tf.Variable(bias, trainable=False, name=f"{norm.name}_folded_bias")
    biases.append(bias)
    norm.call = _bias_add(bias, norm.dtype_policy.compute_dtype)
  return folded, biases


def _bias_add(bias, dtype):
  def call(inputs, training=None, mask=None):  # pylint: disable=unused-argument
    return tf.nn.bias_add(inputs, tf.cast(bias, dtype))
  return call


class SegmentationExport(tf.Module):
  """The model's inference protocol as uint8-in tf.functions of dynamic size.

  The module tracks the model's variables, not the Keras object: SavedModel needs every variable
  the functions capture to be reachable from the module, and serving needs nothing else of the
  Keras object graph (which keeps the SavedModel small and independent of our layer classes).
  """

  def __init__(self, model, scales=SS_SCALES, flip=False, window=None, fold_batch_norm=True):
    super().__init__(name="segmentation_export")
    self.folded_biases = []
    if fold_batch_norm:
      model, self.folded_biases = fold_batch_norms(model)
    self.model_variables = [variable.value for variable in model.variables]
    scales = tuple(float(scale) for scale in scales)
    image_spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")

    def logits(images):  # uint8 [N, H, W, 3] -> float32 [N, H, W, K]
      return inference.model_logits(model, normalize_image(images), scales, flip, window)

    def class_map(images):
      return {"class_map": inference.class_map(logits(images))}

    def probabilities(images):
      values = logits(images)
      return {"class_map": inference.class_map(values), "probabilities": tf.nn.softmax(values, -1)}

    self.class_map = tf.function(class_map, input_signature=[image_spec])
    self.probabilities = tf.function(probabilities, input_signature=[image_spec])


def export_saved_model(model, export_dir, scales=SS_SCALES, flip=False, window=None,
                       overwrite=False, class_names: Optional[Sequence[str]] = None,
                       palette: Optional[Sequence[Sequence[int]]] = None, fold_batch_norm=True):
  """Writes `model` with the given protocol as a SavedModel at `export_dir`; returns its path.

  An existing `export_dir` is an error unless `overwrite`, in which case the new export replaces it
  only once it is complete. class_names/palette (optional) go to export_info.json. Batch norm is
  folded into the convolutions unless `fold_batch_norm` is False.
  """
  if tf.io.gfile.exists(export_dir) and not overwrite:
    raise FileExistsError(f"{export_dir} already exists; pass overwrite=True to replace it")
  module = SegmentationExport(model, scales, flip, window, fold_batch_norm)
  temp_dir = atomic_files.temp_sibling(export_dir)
  try:
    tf.saved_model.save(module, temp_dir, signatures={
        SERVING_SIGNATURE: module.class_map, PROBABILITIES_SIGNATURE: module.probabilities})
    info = {
        "signatures": {SERVING_SIGNATURE: ["class_map"],
                       PROBABILITIES_SIGNATURE: ["class_map", "probabilities"]},
        "input": "images: uint8 [N, H, W, 3], any size; normalised inside as x*2/255 - 1",
        "num_classes": int(model.config.num_classes) if hasattr(model, "config") else None,
        "class_names": list(class_names) if class_names is not None else None,
        "palette": [list(map(int, colour)) for colour in palette] if palette is not None else None,
        "scales": [float(scale) for scale in scales],
        "flip": bool(flip),
        "window": window if window is None or isinstance(window, int) else list(window),
        "batch_norm_folded": bool(fold_batch_norm),
    }
    with tf.io.gfile.GFile(os.path.join(temp_dir, INFO_FILE), "w") as f:
      f.write(json.dumps(info, indent=2))
    atomic_files.publish_dir(temp_dir, export_dir, last_file="saved_model.pb")
  except BaseException:
    if tf.io.gfile.exists(temp_dir):
      tf.io.gfile.rmtree(temp_dir)
    raise
  logging.info("exported SavedModel to %s (scales %s, flip %s, window %s; signatures %s, %s)",
               export_dir, list(scales), flip, window, SERVING_SIGNATURE,
               PROBABILITIES_SIGNATURE)
  return export_dir
