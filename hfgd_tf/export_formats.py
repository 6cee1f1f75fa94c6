"""LiteRT (TFLite) and ONNX exports: the SavedModel's functions at a fixed input size.

Both converters need static shapes, so the model is traced at the size given at export time
(`SegmentationExport.fixed_size_function`: uint8 `images` [N, height, width, 3] -> int32
`class_map` [N, height, width] and float32 `probabilities` [N, height, width, K], normalisation
and batch-norm folding inside as in the SavedModel). Callers resize their images to that size.

  LiteRT: single scale, batch 1, one file per weight type: float32; float16 (weights stored as
    float16, computed in float32 on CPUs, in float16 on GPU delegates that support it); int8
    (dynamic-range quantisation: int8 weights, activations quantised on the fly per batch; no
    representative data needed). Converted by tf.lite.TFLiteConverter (core TensorFlow), run by
    the LiteRT interpreter (ai-edge-litert, requirements-export.txt).
  ONNX: the export's protocol (scales, flip, sliding window: tf2onnx converts neither a
    tf.while_loop that reads variables nor tf.roll, so the window is unrolled at the fixed size),
    any batch. Converted by tf2onnx (requirements-export.txt), run by onnxruntime.

Each export is a folder (model files and export_info.json) written to a temporary sibling and
moved into place like the SavedModel, so the final path never holds a half-written export.
Both compute in float32 whatever the run's --mixed_precision (a bfloat16 graph is not what their
CPU runtimes execute well, if at all).
"""

import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from hfgd_tf import atomic_files, precision
from hfgd_tf.config import TFLITE_TYPES
from hfgd_tf.export import INFO_FILE, SegmentationExport
from hfgd_tf.inference import SS_SCALES

ONNX_FILE = "model.onnx"
ONNX_OPSET = 17
EXTRAS_HINT = "pip install -r requirements-export.txt"


def _module(model, scales=SS_SCALES, flip=False, window=None):
  with precision.float32_policy():
    return SegmentationExport(model, scales, flip, window, inputs="image_tensor")


def tflite_file(weight_type):
  return f"model_{weight_type}.tflite"


def convert_tflite(module, height, width, weight_type="float32"):
  """The LiteRT flatbuffer (bytes) of `module`'s protocol for uint8 [1, height, width, 3]."""
  if weight_type not in TFLITE_TYPES:
    raise ValueError(f"TFLite weight type must be one of {', '.join(TFLITE_TYPES)}, "
                     f"got {weight_type!r}")
  function = module.fixed_size_function(height, width, batch_size=1)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [function.get_concrete_function()], module)
  if weight_type != "float32":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # alone: dynamic-range int8
  if weight_type == "float16":
    converter.target_spec.supported_types = [tf.float16]
  return converter.convert()


def _resize_to_exact_size(ctx, node, name, args):  # pylint: disable=unused-argument
  """tf2onnx's handler of ResizeBilinear, its Resize then given the output size.

  tf2onnx 1.17 gives a static-size resize float32 scales (out / in), and ONNX sizes the output as
  floor(in * scale): 9 * float32(17 / 9) = 16.99... -> 16, a pixel short, and the decoder's sum of
  a resized and a lateral feature fails ("Incompatible dimensions"). Sizes are exact.
  """
  # pylint: disable=import-outside-toplevel
  from tf2onnx import utils
  from tf2onnx.onnx_opset.nn import Resize
  size = node.inputs[1].get_tensor_value() if node.inputs[1].is_const() else None
  Resize.version_11(ctx, node)
  resize = ctx.get_node_by_name(name).inputs[0]  # the NCHW -> NHWC transpose's input
  if size is None or len(resize.input) != 3:  # dynamic: tf2onnx already passes sizes
    return
  images = resize.input[0]  # NCHW
  batch_channels = ctx.make_node("Slice", [
      ctx.make_node("Shape", [images]).output[0],
      ctx.make_const(utils.make_name("zero"), np.array([0], np.int64)).output[0],
      ctx.make_const(utils.make_name("two"), np.array([2], np.int64)).output[0]])
  sizes = ctx.make_node("Concat", [
      batch_channels.output[0],
      ctx.make_const(utils.make_name("size"), np.array(size, np.int64)).output[0]], {"axis": 0})
  no_scales = ctx.make_const(utils.make_name("no_scales"), np.array([], np.float32))
  ctx.replace_inputs(resize, [images, resize.input[1], no_scales.output[0], sizes.output[0]])


def convert_onnx(module, height, width, opset=ONNX_OPSET):
  """The serialized ONNX model of `module`'s protocol for uint8 [N, height, width, 3]."""
  try:
    import tf2onnx  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError(f"--export_format=onnx needs tf2onnx: {EXTRAS_HINT}") from error
  function = module.fixed_size_function(height, width)
  proto, _ = tf2onnx.convert.from_function(
      function, input_signature=function.input_signature, opset=opset,
      custom_op_handlers={"ResizeBilinear": (_resize_to_exact_size, [])})
  return proto.SerializeToString()


def _info(model, height, width, protocol, class_names, palette, files):
  return {
      "input": f"images: uint8 [N, {height}, {width}, 3]; normalised inside as x*2/255 - 1",
      "outputs": {"class_map": f"int32 [N, {height}, {width}]",
                  "probabilities": f"float32 [N, {height}, {width}, K]"},
      "num_classes": int(model.config.num_classes),
      "class_names": list(class_names) if class_names is not None else None,
      "palette": [list(map(int, colour)) for colour in palette] if palette is not None else None,
      **protocol, "batch_norm_folded": True, "files": files,
  }


def _publish(export_dir, overwrite, files, info):
  """Writes `files` ({name: bytes}) and export_info.json as the folder `export_dir`."""
  if tf.io.gfile.exists(export_dir) and not overwrite:
    raise FileExistsError(f"{export_dir} already exists; pass overwrite=True to replace it")
  temp_dir = atomic_files.temp_sibling(export_dir)
  try:
    tf.io.gfile.makedirs(temp_dir)
    for name, content in files.items():
      atomic_files.write_bytes(os.path.join(temp_dir, name), content)
    atomic_files.write_json(os.path.join(temp_dir, INFO_FILE), info)
    atomic_files.publish_dir(temp_dir, export_dir, last_file=INFO_FILE)
  except BaseException:
    if tf.io.gfile.exists(temp_dir):
      tf.io.gfile.rmtree(temp_dir)
    raise


def export_tflite(model, export_dir, height, width, weight_types=TFLITE_TYPES, overwrite=False,
                  class_names: Optional[Sequence[str]] = None,
                  palette: Optional[Sequence[Sequence[int]]] = None):
  """Writes one single-scale LiteRT model per weight type (model_<type>.tflite) and
  export_info.json to the folder `export_dir`; returns {weight type: path}."""
  module = _module(model)
  files = {tflite_file(weight_type): convert_tflite(module, height, width, weight_type)
           for weight_type in weight_types}
  protocol = {"scales": list(SS_SCALES), "flip": False, "window": None}
  _publish(export_dir, overwrite, files, _info(model, height, width, protocol, class_names,
                                               palette, sorted(files)))
  logging.info("exported LiteRT models (%s, single scale, %dx%d) to %s",
               ", ".join(weight_types), height, width, export_dir)
  return {weight_type: os.path.join(export_dir, tflite_file(weight_type))
          for weight_type in weight_types}


def export_onnx(model, export_dir, height, width, scales=SS_SCALES, flip=False, window=None,
                overwrite=False, class_names: Optional[Sequence[str]] = None,
                palette: Optional[Sequence[Sequence[int]]] = None, opset=ONNX_OPSET):
  """Writes the ONNX model (model.onnx, with the given protocol) and export_info.json to the
  folder `export_dir`; returns the model's path."""
  module = _module(model, scales, flip, window)
  files = {ONNX_FILE: convert_onnx(module, height, width, opset)}
  protocol = {"scales": [float(scale) for scale in scales], "flip": bool(flip),
              "window": window if window is None or isinstance(window, int) else list(window),
              "opset": opset}
  _publish(export_dir, overwrite, files, _info(model, height, width, protocol, class_names,
                                               palette, sorted(files)))
  logging.info("exported ONNX model (scales %s, flip %s, window %s, %dx%d) to %s", list(scales),
               flip, window, height, width, export_dir)
  return os.path.join(export_dir, ONNX_FILE)
