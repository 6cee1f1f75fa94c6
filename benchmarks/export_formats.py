r"""Parity, size and CPU latency of one model's exports, side by side (docs/serving.md's table).

  python -m benchmarks.export_formats --export_dir=runs/demo/export \
      --images='runs/demo/predict_inputs/*.png' [--ms_flip_dir=runs/demo/export_msflip]

Reads what `--mode=export` wrote under --export_dir: the SavedModel <export_dir>/1 (the reference),
tflite/ and onnx/ (each optional). Every image is resized to the fixed-size exports' size when it
has another. Parity: the share of class-map pixels equal to the SavedModel's on the same image,
over all images; latency: the median of --repeats single-image calls after a warm-up, on
--threads CPU threads for LiteRT and onnxruntime (TensorFlow uses all cores). With
--ms_flip_dir, the same for a SavedModel (1/) and ONNX export (onnx/) of the MS+flip protocol.
Needs requirements-export.txt.
"""

import json
import os
import statistics
import time

import numpy as np
from absl import app, flags

from hfgd_tf.quiet_import import import_tensorflow_quietly

tf = import_tensorflow_quietly()

_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "What --mode=export wrote.", required=True)
_IMAGES = flags.DEFINE_string("images", None, "Glob of the images to compare on.", required=True)
_MS_FLIP_DIR = flags.DEFINE_string("ms_flip_dir", None, "Exports of the MS+flip protocol.")
_VERSION = flags.DEFINE_integer("version", 1, "The SavedModel's version folder.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls per format.")
_THREADS = flags.DEFINE_integer("threads", 2, "CPU threads of LiteRT and onnxruntime.")


def _size(path):
  """Bytes of a file, or of every file under a folder."""
  if not os.path.isdir(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(folder, name))
             for folder, _, names in os.walk(path) for name in names)


def _latency(function, image):
  for _ in range(3):
    function(image)
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    function(image)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _row(name, protocol, function, images, reference, path):
  """A table row: class maps of `function` (uint8 [1, H, W, 3] -> int32 [1, H, W]) against
  `reference`'s (a list), and its size and latency."""
  equal = total = 0
  for image, expected in zip(images, reference):
    equal += int(np.sum(function(image) == expected))
    total += expected.size
  return (f"| {name} | {protocol} | {100.0 * equal / total:.2f} | {_size(path) / 1e6:.2f} | "
          f"{1000 * _latency(function, images[0]):.1f} |")


def _saved_model(path):
  signature = tf.saved_model.load(path).signatures["serving_default"]
  return lambda image: signature(images=tf.constant(image))["class_map"].numpy()


def _onnx(path):
  import onnxruntime  # pylint: disable=import-outside-toplevel
  options = onnxruntime.SessionOptions()
  options.intra_op_num_threads = _THREADS.value
  session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
  names = [output.name for output in session.get_outputs()]
  return lambda image: session.run([names[names.index("class_map")]], {"images": image})[0]


def _litert(path):
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
  runner = Interpreter(model_path=path, num_threads=_THREADS.value).get_signature_runner()
  return lambda image: runner(images=image)["class_map"]


def _fixed_size(folder):
  """(height, width) of the fixed-size exports under `folder`, or None."""
  for name in ("tflite", "onnx"):
    info = os.path.join(folder, name, "export_info.json")
    if os.path.exists(info):
      with open(info, encoding="utf-8") as f:
        shape = json.load(f)["input"].split("[")[1].split("]")[0].split(", ")
      return int(shape[1]), int(shape[2])
  return None


def _compare(folder, images, protocol, rows):
  saved_path = os.path.join(folder, str(_VERSION.value))
  saved = _saved_model(saved_path)
  reference = [saved(image) for image in images]
  rows.append(_row("SavedModel (TF Serving, TensorFlow)", protocol, saved, images, reference,
                   saved_path))
  loaded = tf.saved_model.load(saved_path)
  if "image_bytes" in loaded.signatures:
    encoded = loaded.signatures["image_bytes"]
    rows.append(_row("SavedModel, PNG bytes (REST b64)", protocol, lambda image: encoded(
        image_bytes=tf.io.encode_png(image[0])[None])["class_map"].numpy(), images, reference,
                     saved_path))
  onnx_path = os.path.join(folder, "onnx", "model.onnx")
  if os.path.exists(onnx_path):
    rows.append(_row("ONNX (onnxruntime)", protocol, _onnx(onnx_path), images, reference,
                     onnx_path))
  for kind in ("float32", "float16", "int8"):
    path = os.path.join(folder, "tflite", f"model_{kind}.tflite")
    if os.path.exists(path):
      rows.append(_row(f"LiteRT {kind}", "single scale", _litert(path), images, reference, path))


def main(argv):
  del argv
  size = _fixed_size(_EXPORT_DIR.value)
  images = []
  for path in sorted(tf.io.gfile.glob(_IMAGES.value)):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    if size and tuple(image.shape[:2]) != size:
      image = tf.cast(tf.round(tf.image.resize(image, size)), tf.uint8)
    images.append(image.numpy()[None])
  rows = ["| format (runtime) | protocol | pixels equal to the SavedModel (%) | size (MB) | "
          "latency, 1 image (ms) |", "|---|---|---|---|---|"]
  _compare(_EXPORT_DIR.value, images, "single scale", rows)
  if _MS_FLIP_DIR.value:
    _compare(_MS_FLIP_DIR.value, images, "MS+flip, sliding window", rows)
  print(f"{len(images)} images of {images[0].shape[1]}x{images[0].shape[2]}:")
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
