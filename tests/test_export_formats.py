"""LiteRT and ONNX exports, run by their own runtimes (ai-edge-litert, onnxruntime) against the
export module the SavedModel saves (tests/test_export.py: equal to it pixel for pixel): LiteRT
float32 / float16 / int8 single scale through `--mode=export --export_format=tflite`, ONNX with
MS+flip and a sliding window. Each parity check is shown able to fail (against the mirrored
image's outputs). Skipped without requirements-export.txt."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from hfgd_tf import bn_statistics, export, export_formats, runs
from hfgd_tf.config import ModelConfig
from hfgd_tf.flags import define_all_flags, settings_from_flags
from hfgd_tf.modeling.model import build_model
from hfgd_tf.ops import normalize_image

NUM_CLASSES = 7  # the built-in dataset's, whose flags the export command below parses
SIZE = (33, 41)
# Least share of equal class-map pixels and largest mean probability difference, by LiteRT weight
# type, on the untrained model below (small class margins: docs/serving.md has a trained model's).
TFLITE_PARITY = {"float32": (0.999, 1e-4), "float16": (0.85, 0.03), "int8": (0.5, 0.15)}


def varied_model():
  """A tiny HFGD whose class maps hold several classes, so that a pixel parity measures something:
  its batch-norm statistics recomputed on images like the test's (at initialisation they are the
  identity, and every pixel gets the same class)."""
  keras.utils.set_random_seed(0)
  model = build_model(ModelConfig(num_classes=NUM_CLASSES, backbone="resnet_test",
                                  encoder_filters=32, decoder_filters=16))
  images = _images(4, seed=5)
  labels = tf.zeros(images.shape[:3], tf.int32)  # unused by the statistics
  bn_statistics.recalibrate(model, [(normalize_image(images), labels)])
  return model


@pytest.fixture(scope="module", name="model")
def model_fixture():
  return varied_model()


def _images(count, seed=0):
  """Smooth random images (upsampled noise): regions a segmentation model tells apart."""
  coarse = np.random.RandomState(seed).uniform(0, 255, (count, 5, 6, 3)).astype(np.float32)
  return tf.cast(tf.image.resize(coarse, SIZE), tf.uint8).numpy()


def _parity(outputs, reference):
  """(share of equal class-map pixels, mean absolute probability difference)."""
  return (float(np.mean(outputs["class_map"] == reference["class_map"])),
          float(np.abs(outputs["probabilities"] - reference["probabilities"]).mean()))


def _reference(module, images):
  return {name: value.numpy() for name, value in module.probabilities(images).items()}


def _check_classes(class_map):
  counts = np.bincount(class_map.ravel(), minlength=NUM_CLASSES) / class_map.size
  assert (counts > 0.05).sum() >= 2, counts  # not one class everywhere


@pytest.mark.slow  # three conversions: 145 s on a loaded 2-core CPU (load ~10)
def test_tflite_export_command_and_litert_parity(model, tmp_path):
  interpreter = pytest.importorskip("ai_edge_litert.interpreter")
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(["main.py", "--dataset=builtin", "--mode=export", "--export_format=tflite",
               f"--export_height={SIZE[0]}", f"--export_width={SIZE[1]}",
               f"--export_dir={tmp_path / 'export'}"])
  paths = runs.run_export(settings_from_flags(flag_values, "export"), model=model)
  folder = tmp_path / "export" / "tflite"
  assert paths == {kind: str(folder / f"model_{kind}.tflite") for kind in TFLITE_PARITY}
  info = json.loads((folder / export.INFO_FILE).read_text())
  assert info["scales"] == [1.0] and info["input"].startswith(f"images: uint8 [N, {SIZE[0]}")
  sizes = {kind: os.path.getsize(path) for kind, path in paths.items()}
  assert sizes["int8"] < sizes["float16"] < sizes["float32"]

  module = export.SegmentationExport(model)
  images = _images(2)
  for kind, path in paths.items():
    runner = interpreter.Interpreter(model_path=path).get_signature_runner()
    for image in images:
      outputs = runner(images=image[None])
      reference = _reference(module, image[None])
      _check_classes(reference["class_map"])
      equal, difference = _parity(outputs, reference)
      least_equal, largest_difference = TFLITE_PARITY[kind]
      assert equal >= least_equal and difference <= largest_difference, (kind, equal, difference)
      # Outputs that are not this image's (the mirrored image's) fail the same check (int8's
      # loose one: they are further off).
      wrong_equal, wrong_difference = _parity(outputs, _reference(module, image[None, :, ::-1]))
      if kind == "int8":
        assert wrong_difference > difference, (wrong_difference, difference)
      else:
        assert wrong_equal < least_equal or wrong_difference > largest_difference, kind


@pytest.mark.slow  # an unrolled graph of 4 windows x 2 flips: minutes on a loaded 2-core CPU
def test_onnx_export_runs_ms_flip_and_window_in_onnxruntime(model, tmp_path):
  onnxruntime = pytest.importorskip("onnxruntime")
  pytest.importorskip("tf2onnx")
  protocol = dict(scales=(0.75, 1.0), flip=True, window=(33, 28))  # 2 windows a scale
  path = export_formats.export_onnx(model, str(tmp_path / "onnx"), *SIZE, **protocol)
  info = json.loads((tmp_path / "onnx" / export.INFO_FILE).read_text())
  assert info["scales"] == [0.75, 1.0] and info["flip"] and info["window"] == [33, 28]
  session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
  images = _images(2, seed=1)
  names = [output.name for output in session.get_outputs()]
  outputs = dict(zip(names, session.run(None, {"images": images})))
  module = export.SegmentationExport(model, **protocol)  # the SavedModel's tf.while_loop window
  reference = _reference(module, images)
  _check_classes(reference["class_map"])
  equal, difference = _parity(outputs, reference)
  assert equal >= 0.999 and difference <= 1e-5, (equal, difference)
  equal, difference = _parity(outputs, _reference(module, images[:, :, ::-1]))
  assert equal < 0.999 or difference > 1e-5  # the same check fails on the mirrored images' outputs
  with pytest.raises(FileExistsError, match="overwrite"):
    export_formats.export_onnx(model, str(tmp_path / "onnx"), *SIZE, **protocol)
