"""SavedModel export with the normalisation and the inference protocol inside, in TF Serving's form.

The SavedModel (plain `tf.saved_model.save` of a `tf.Module`, loadable with TensorFlow alone, no
project code) takes images as uint8 tensors, as encoded JPEG/PNG strings, or both (`inputs`):
  image_tensor: `images` uint8 [N, H, W, 3] of any N, H, W
    serving_default -> {"class_map": int32 [N, H, W]}
    probabilities   -> {"class_map": int32 [N, H, W], "probabilities": float32 [N, H, W, K]}
  image_bytes: `image_bytes` string [N], each a JPEG, PNG, BMP or GIF (first frame) of its own
    size, decoded inside to RGB (as TF Serving's REST API carries them: {"b64": "..."})
    serving_default -> {"class_map": int32 [N, Hmax, Wmax], "height": int32 [N], "width": int32 [N]}
    probabilities   -> the same and "probabilities": float32 [N, Hmax, Wmax, K]
    Each image runs alone at its own size; its class map is the top-left height x width corner,
    padded with -1 (probabilities with 0) to the largest image of the request: a dense tensor with
    the batch first, the one form TF Serving's row ("instances") JSON and gRPC both carry.
  both: the image_tensor signatures, and the image_bytes ones as `image_bytes` and
    `image_bytes_probabilities`.
Inside: x*2/255 - 1, then `inference.model_logits` with the export's scales, flip and window (the
single-scale or the MS+flip protocol), argmax / softmax at the input resolution. The functions are
also attributes of the loaded object (`loaded.class_map(images)`, `loaded.class_map_from_bytes`).

Batch norm is folded into the convolution before it (`fold_batch_norms`, on by default): at
inference BN is a per-channel affine map, so conv -> BN equals one conv with scaled kernel and a
bias, which oneDNN and cuDNN fuse with the ReLU after it. Same logits to float rounding (~1e-6).

`export_info.json` beside `saved_model.pb` records the classes, palette and protocol, and
`assets.extra/tf_serving_warmup_requests` holds one PredictRequest per serving signature, which TF
Serving replays when it loads the model so that the first client request does not pay for graph
optimisation. The export is written to a temporary sibling directory and moved into place
(`atomic_files.publish_dir`), so the final path never holds a half-written model, on a local disk
or in a bucket. TF Serving's layout (a numeric version folder under the model's base path) is the
caller's: `runs.run_export` writes to <export_dir>/<version>.
"""

import dataclasses
import os
from typing import Optional, Sequence

import keras
import tensorflow as tf
from absl import logging

from hfgd_tf import atomic_files, inference
from hfgd_tf.config import EXPORT_INPUTS
from hfgd_tf.inference import SS_SCALES
from hfgd_tf.modeling.layers.common import ConvNormAct
from hfgd_tf.modeling.model import build_model
from hfgd_tf.ops import normalize_image

SERVING_SIGNATURE = "serving_default"
PROBABILITIES_SIGNATURE = "probabilities"
BYTES_SIGNATURE = "image_bytes"  # the image_bytes signatures' names when both inputs are exported
BYTES_PROBABILITIES_SIGNATURE = "image_bytes_probabilities"
INFO_FILE = "export_info.json"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# The class map's value outside an image of an image_bytes request (the padding).
PADDED_CLASS = -1


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


def decode_image(encoded):
  """uint8 [H, W, 3] of one encoded image (JPEG, PNG, BMP, or a GIF's first frame); grey and RGBA
  become RGB. A string that is none of these fails the request with TensorFlow's decode error."""
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  return tf.ensure_shape(image, [None, None, 3])


def _per_image(outputs_fn, names, num_classes):
  """A function of a string [N] batch running `outputs_fn` (uint8 [1, h, w, 3] -> a dict of
  `names`: "class_map" [1, h, w] and/or "probabilities" [1, h, w, K]) on each decoded image alone,
  with the outputs padded to the batch's largest image, and each image's height and width."""
  def serve(image_bytes):  # string [N]
    def one(encoded):
      image = decode_image(encoded)
      outputs = {name: tf.RaggedTensor.from_tensor(value[0], ragged_rank=1)  # [h, (w)(, K)]
                 for name, value in outputs_fn(image[None]).items()}
      outputs.update(height=tf.shape(image)[0], width=tf.shape(image)[1])
      return outputs

    specs = {"class_map": tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1),
             "probabilities": tf.RaggedTensorSpec([None, None, num_classes], tf.float32,
                                                  ragged_rank=1)}
    signature = {name: specs[name] for name in names}
    signature.update(height=tf.TensorSpec([], tf.int32), width=tf.TensorSpec([], tf.int32))
    outputs = tf.map_fn(one, image_bytes, fn_output_signature=signature)  # ragged [N, (h), (w)..]
    padded = {"height": outputs["height"], "width": outputs["width"]}
    if "class_map" in names:
      padded["class_map"] = outputs["class_map"].to_tensor(PADDED_CLASS)  # [N, Hmax, Wmax]
    if "probabilities" in names:
      padded["probabilities"] = outputs["probabilities"].to_tensor(0.0)  # [N, Hmax, Wmax, K]
    return padded
  return serve


class SegmentationExport(tf.Module):
  """The model's inference protocol as tf.functions of uint8 images and/or encoded images.

  The module tracks the model's variables, not the Keras object: SavedModel needs every variable
  the functions capture to be reachable from the module, and serving needs nothing else of the
  Keras object graph (which keeps the SavedModel small and independent of our layer classes).
  `inputs` (one of EXPORT_INPUTS) picks the functions: class_map/probabilities (image_tensor),
  class_map_from_bytes/probabilities_from_bytes (image_bytes). `fixed_size_function` gives the
  protocol at a static size with the sliding window unrolled, for TFLite and ONNX converters.
  """

  def __init__(self, model, scales=SS_SCALES, flip=False, window=None, fold_batch_norm=True,
               inputs="image_tensor"):
    super().__init__(name="segmentation_export")
    if inputs not in EXPORT_INPUTS:
      raise ValueError(f"export inputs must be one of {', '.join(EXPORT_INPUTS)}, got {inputs!r}")
    self.inputs = inputs
    self.folded_biases = []
    if fold_batch_norm:
      model, self.folded_biases = fold_batch_norms(model)
    self.model_variables = [variable.value for variable in model.variables]
    scales = tuple(float(scale) for scale in scales)

    def logits(images, unroll_window=False):  # uint8 [N, H, W, 3] -> float32 [N, H, W, K]
      return inference.model_logits(model, normalize_image(images), scales, flip, window,
                                    unroll_window)

    def class_map(images):
      return {"class_map": inference.class_map(logits(images))}

    def probabilities(images, unroll_window=False):
      values = logits(images, unroll_window)
      return {"class_map": inference.class_map(values), "probabilities": tf.nn.softmax(values, -1)}

    self._probabilities = probabilities  # a plain function: not saved, not tracked
    if inputs in ("image_tensor", "both"):
      image_spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
      self.class_map = tf.function(class_map, input_signature=[image_spec])
      self.probabilities = tf.function(probabilities, input_signature=[image_spec])
    if inputs in ("image_bytes", "both"):
      bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
      num_classes = int(model.config.num_classes)
      self.class_map_from_bytes = tf.function(
          _per_image(class_map, ("class_map",), num_classes), input_signature=[bytes_spec])
      self.probabilities_from_bytes = tf.function(
          _per_image(probabilities, ("class_map", "probabilities"), num_classes),
          input_signature=[bytes_spec])

  def fixed_size_function(self, height, width, batch_size=None):
    """A tf.function of uint8 `images` [batch_size, height, width, 3] (batch_size None: any)
    returning {"class_map", "probabilities"}, with the sliding window unrolled."""
    return tf.function(lambda images: self._probabilities(images, unroll_window=True),
                       input_signature=[tf.TensorSpec([batch_size, height, width, 3], tf.uint8,
                                                      name="images")])

  def signatures(self):
    """The SavedModel signatures, by name (module docstring)."""
    if self.inputs == "image_tensor":
      return {SERVING_SIGNATURE: self.class_map, PROBABILITIES_SIGNATURE: self.probabilities}
    encoded = {SERVING_SIGNATURE: self.class_map_from_bytes,
               PROBABILITIES_SIGNATURE: self.probabilities_from_bytes}
    if self.inputs == "image_bytes":
      return encoded
    return {SERVING_SIGNATURE: self.class_map, PROBABILITIES_SIGNATURE: self.probabilities,
            BYTES_SIGNATURE: self.class_map_from_bytes,
            BYTES_PROBABILITIES_SIGNATURE: self.probabilities_from_bytes}


def _varint(value):
  """`value` (>= 0) as a protocol-buffer base-128 varint."""
  out = bytearray()
  while True:
    byte, value = value & 0x7F, value >> 7
    out.append(byte | 0x80 if value else byte)
    if not value:
      return bytes(out)


def _message_field(number, payload):
  """Field `number` of a protocol-buffer message holding `payload` (wire type 2: bytes/message)."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def prediction_log(signature_name, inputs):
  """A serialized tensorflow.serving.PredictionLog holding the PredictRequest of `inputs`
  ({name: tf.TensorProto}) to `signature_name`: what a TF Serving warm-up file holds.

  Written from the field numbers of tensorflow_serving/apis (PredictionLog.predict_log = 6,
  PredictLog.request = 1, PredictRequest.model_spec = 1 and inputs = 2, a map of key = 1 and
  value = 2, ModelSpec.signature_name = 3), so that exporting needs no tensorflow-serving-api:
  that package pins its own TensorFlow release; tests/test_export.py parses the file with it.
  """
  request = _message_field(1, _message_field(3, signature_name.encode()))
  for name, proto in sorted(inputs.items()):
    entry = _message_field(1, name.encode()) + _message_field(2, proto.SerializeToString())
    request += _message_field(2, entry)
  return _message_field(6, _message_field(1, request))


def _warmup_records(signatures, height, width):
  """One PredictionLog per serving signature: a mid-grey height x width image, as a uint8 tensor
  or a PNG string as the signature takes it."""
  grey = tf.fill([height, width, 3], tf.constant(128, tf.uint8))
  records = []
  for name, function in signatures.items():
    if name not in (SERVING_SIGNATURE, BYTES_SIGNATURE):
      continue
    (spec,) = function.input_signature
    value = tf.io.encode_png(grey)[None] if spec.dtype == tf.string else grey[None]
    records.append(prediction_log(name, {spec.name: tf.make_tensor_proto(value.numpy())}))
  return records


def export_saved_model(model, export_dir, scales=SS_SCALES, flip=False, window=None,
                       overwrite=False, class_names: Optional[Sequence[str]] = None,
                       palette: Optional[Sequence[Sequence[int]]] = None, fold_batch_norm=True,
                       inputs="image_tensor", warmup_size=(64, 64)):
  """Writes `model` with the given protocol as a SavedModel at `export_dir`; returns its path.

  An existing `export_dir` is an error unless `overwrite`, in which case the new export replaces it
  only once it is complete. class_names/palette (optional) go to export_info.json. Batch norm is
  folded into the convolutions unless `fold_batch_norm` is False. `inputs`: which signatures (one of
  EXPORT_INPUTS, module docstring); `warmup_size`: (height, width) of the warm-up requests' image.
  """
  if tf.io.gfile.exists(export_dir) and not overwrite:
    raise FileExistsError(f"{export_dir} already exists; pass overwrite=True to replace it")
  module = SegmentationExport(model, scales, flip, window, fold_batch_norm, inputs)
  signatures = module.signatures()
  temp_dir = atomic_files.temp_sibling(export_dir)
  try:
    tf.saved_model.save(module, temp_dir, signatures=signatures)
    assets = os.path.join(temp_dir, "assets")
    if tf.io.gfile.isdir(assets) and not tf.io.gfile.listdir(assets):
      # Empty (the export has no asset files), and a folder whose name is a prefix of
      # assets.extra's confuses prefix-listing stores (ram://: assets/ would list ".extra").
      tf.io.gfile.rmtree(assets)
    tf.io.gfile.makedirs(os.path.dirname(os.path.join(temp_dir, WARMUP_FILE)))
    with tf.io.TFRecordWriter(os.path.join(temp_dir, WARMUP_FILE)) as writer:
      for record in _warmup_records(signatures, *warmup_size):
        writer.write(record)
    info = {
        "signatures": {name: list(function.structured_outputs)
                       for name, function in ((name, function.get_concrete_function())
                                              for name, function in signatures.items())},
        "input": inputs,
        "num_classes": int(model.config.num_classes) if hasattr(model, "config") else None,
        "class_names": list(class_names) if class_names is not None else None,
        "palette": [list(map(int, colour)) for colour in palette] if palette is not None else None,
        "scales": [float(scale) for scale in scales],
        "flip": bool(flip),
        "window": window if window is None or isinstance(window, int) else list(window),
        "batch_norm_folded": bool(fold_batch_norm),
    }
    atomic_files.write_json(os.path.join(temp_dir, INFO_FILE), info)
    atomic_files.publish_dir(temp_dir, export_dir, last_file="saved_model.pb")
  except BaseException:
    if tf.io.gfile.exists(temp_dir):
      tf.io.gfile.rmtree(temp_dir)
    raise
  logging.info("exported SavedModel to %s (scales %s, flip %s, window %s; signatures %s)",
               export_dir, list(scales), flip, window, ", ".join(signatures))
  return export_dir
