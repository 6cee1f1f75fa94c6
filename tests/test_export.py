"""SavedModel export: loaded in a fresh Python process that imports only TensorFlow, its class maps
equal the in-process argmax of multi_scale_logits pixel for pixel (single scale and MS+flip with a
sliding window, two image sizes); probabilities sum to 1; no clobbering without `overwrite`."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from hfgd_tf import export
from hfgd_tf.config import ModelConfig
from hfgd_tf.inference import multi_scale_logits
from hfgd_tf.modeling.model import build_model
from hfgd_tf.ops import normalize_image

NUM_CLASSES = 4
PROTOCOLS = {
    "single_scale": dict(scales=(1.0,), flip=False, window=None),
    "ms_flip_window": dict(scales=(0.75, 1.0), flip=True, window=(24, 20)),
}
# Runs in a fresh interpreter: no project on the path, cwd elsewhere, only TensorFlow imported.
LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    exports, images_file, out_file = sys.argv[1:]
    images = np.load(images_file)
    outputs = {}
    for name in json.loads(exports):
      loaded = tf.saved_model.load(name)
      for key, batch in images.items():
        served = loaded.signatures["serving_default"](images=tf.constant(batch))
        probs = loaded.signatures["probabilities"](images=tf.constant(batch))
        outputs[f"{name}|{key}|class_map"] = served["class_map"].numpy()
        outputs[f"{name}|{key}|probs_class_map"] = probs["class_map"].numpy()
        outputs[f"{name}|{key}|probabilities"] = probs["probabilities"].numpy()
    assert not any(module.startswith("hfgd_tf") for module in sys.modules), "project imported"
    np.savez(out_file, **outputs)
""")


@pytest.fixture(scope="module")
def model():
  return build_model(ModelConfig(num_classes=NUM_CLASSES, backbone="resnet_test",
                                 encoder_filters=32, decoder_filters=16))


@pytest.mark.slow  # > 15 s on 2 cores; CI runs it
def test_exported_class_maps_equal_in_process_evaluation(model, tmp_path):
  rng = np.random.RandomState(0)
  images = {"a": rng.randint(0, 256, (2, 29, 37, 3)).astype(np.uint8),
            "b": rng.randint(0, 256, (1, 20, 16, 3)).astype(np.uint8)}
  export_dirs = {}
  for name, protocol in PROTOCOLS.items():
    export_dirs[name] = export.export_saved_model(
        model, str(tmp_path / name), class_names=["a", "b", "c", "d"],
        palette=[(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)], **protocol)
  images_file, out_file = str(tmp_path / "images.npz"), str(tmp_path / "outputs.npz")
  np.savez(images_file, **images)
  env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  result = subprocess.run(
      [sys.executable, "-c", LOADER, json.dumps(list(export_dirs.values())), images_file,
       out_file], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  served = np.load(out_file)

  for name, protocol in PROTOCOLS.items():
    info = json.loads((tmp_path / name / export.INFO_FILE).read_text())
    assert info["scales"] == list(protocol["scales"]) and info["flip"] == protocol["flip"]
    assert info["class_names"] == ["a", "b", "c", "d"]
    for key, batch in images.items():
      logits = multi_scale_logits(lambda x: model(x, training=False), normalize_image(batch),
                                  **protocol)
      expected = np.argmax(logits.numpy(), -1)
      prefix = f"{export_dirs[name]}|{key}|"
      assert served[prefix + "class_map"].shape == batch.shape[:3]
      assert served[prefix + "class_map"].dtype == np.int32
      np.testing.assert_array_equal(served[prefix + "class_map"], expected)
      np.testing.assert_array_equal(served[prefix + "probs_class_map"], expected)
      probabilities = served[prefix + "probabilities"]
      assert probabilities.shape == batch.shape[:3] + (NUM_CLASSES,)
      np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
      np.testing.assert_allclose(probabilities, tf.nn.softmax(logits).numpy(), rtol=1e-4,
                                 atol=1e-6)
  # The two protocols are not the same function, or the parity above would be half a test.
  assert not np.array_equal(served[f"{export_dirs['single_scale']}|a|probabilities"],
                            served[f"{export_dirs['ms_flip_window']}|a|probabilities"])


def test_export_refuses_to_clobber_without_overwrite(model, tmp_path):
  target = tmp_path / "export"
  export.export_saved_model(model, str(target))
  marker = target / "marker"
  marker.write_text("old export")
  with pytest.raises(FileExistsError, match="overwrite"):
    export.export_saved_model(model, str(target))
  assert marker.exists()

  export.export_saved_model(model, str(target), scales=(0.5, 1.0), overwrite=True)
  assert not marker.exists()
  assert json.loads((target / export.INFO_FILE).read_text())["scales"] == [0.5, 1.0]
  assert (target / "saved_model.pb").exists()
  assert sorted(os.listdir(tmp_path)) == ["export"]  # no temporary or old directories left


def test_export_folds_batch_norm_into_convolutions_with_the_same_logits(tmp_path):
  model = build_model(ModelConfig(num_classes=NUM_CLASSES, backbone="resnet_test",
                                  encoder_filters=32, decoder_filters=16))
  rng = np.random.RandomState(3)
  for variable in model.weights:  # BN statistics far from their identity initial values
    if variable.name in ("gamma", "beta", "moving_mean", "moving_variance"):
      variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))
  weights = [variable.numpy() for variable in model.weights]
  module = export.SegmentationExport(model)
  images = tf.constant(rng.randint(0, 256, (2, 29, 37, 3)).astype(np.uint8))
  served = module.probabilities(images)["probabilities"].numpy()
  expected = tf.nn.softmax(multi_scale_logits(lambda x: model(x, training=False),
                                              normalize_image(images))).numpy()
  np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
  # Every batch norm of this model follows a convolution: none is left in the serving graph.
  graph = module.probabilities.get_concrete_function().graph
  assert not [op for op in graph.get_operations() if op.type in ("Rsqrt", "FusedBatchNormV3")]
  assert len(module.folded_biases) == sum(
      isinstance(layer, keras.layers.BatchNormalization) for layer in model._flatten_layers())
  for before, variable in zip(weights, model.weights):  # the model itself is left as it was
    np.testing.assert_array_equal(variable.numpy(), before)


def test_the_unrolled_sliding_window_equals_the_loop():
  """What the fixed-size exports trace (static slices and pads) is the loop's arithmetic."""
  model = build_model(ModelConfig(num_classes=NUM_CLASSES, backbone="resnet_test",
                                  encoder_filters=32, decoder_filters=16))
  images = normalize_image(np.random.RandomState(5).randint(0, 256, (1, 33, 41, 3)))
  protocol = dict(PROTOCOLS["ms_flip_window"], window=(33, 28))  # 2 windows a scale
  expected = multi_scale_logits(lambda x: model(x, training=False), images, **protocol).numpy()
  unrolled = tf.function(lambda x: multi_scale_logits(lambda y: model(y, training=False), x,
                                                      unroll_window=True, **protocol))
  np.testing.assert_allclose(unrolled(images).numpy(), expected, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="static image size"):
    tf.function(lambda x: multi_scale_logits(lambda y: y, x, window=8, unroll_window=True),
                input_signature=[tf.TensorSpec([1, None, None, 3])]).get_concrete_function()


def test_image_bytes_give_each_image_its_own_class_map_padded_to_the_largest():
  """A batch of PNG and JPEG strings of three sizes: each image's class map and probabilities are
  those of its decoded pixels alone, in the top-left corner; the rest is -1 and 0."""
  model = build_model(ModelConfig(num_classes=NUM_CLASSES, backbone="resnet_test",
                                  encoder_filters=32, decoder_filters=16))
  module = export.SegmentationExport(model, inputs="both")  # the protocol's code is shared
  rng = np.random.RandomState(6)
  pixels = [rng.randint(0, 256, size).astype(np.uint8)
            for size in [(29, 37, 3), (20, 16, 3), (24, 30, 3)]]
  encoded = [tf.io.encode_png(pixels[0]), tf.io.encode_jpeg(pixels[1], quality=90),
             tf.io.encode_png(pixels[2])]
  served = module.probabilities_from_bytes(tf.stack(encoded))
  class_maps = module.class_map_from_bytes(tf.stack(encoded))["class_map"].numpy()
  assert served["class_map"].shape == (3, 29, 37) and served["class_map"].dtype == tf.int32
  np.testing.assert_array_equal(class_maps, served["class_map"].numpy())
  np.testing.assert_array_equal(served["height"], [29, 20, 24])
  np.testing.assert_array_equal(served["width"], [37, 16, 30])
  for index, (image, data) in enumerate(zip(pixels, encoded)):
    decoded = tf.io.decode_image(data, channels=3)[None]  # the JPEG's pixels are not the original's
    expected = module.probabilities(decoded)
    height, width = image.shape[:2]
    np.testing.assert_array_equal(class_maps[index, :height, :width], expected["class_map"][0])
    np.testing.assert_allclose(served["probabilities"][index, :height, :width],
                               expected["probabilities"][0], rtol=1e-5, atol=1e-6)
    assert (class_maps[index, height:] == export.PADDED_CLASS).all()
    assert (class_maps[index, :, width:] == export.PADDED_CLASS).all()
    assert not served["probabilities"].numpy()[index, height:].any()
  # The probabilities vary from pixel to pixel: the comparisons above compare something.
  assert served["probabilities"].numpy()[0].std(axis=(0, 1)).min() > 1e-4
  with pytest.raises(tf.errors.InvalidArgumentError):
    module.class_map_from_bytes(tf.constant([b"not an image"]))
