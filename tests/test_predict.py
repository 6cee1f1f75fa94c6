"""Prediction on a folder: outputs at each input's size (alone and in a padded batch), a corrupt
file reported and skipped; a single image runs at its exact size; colouring and overlay."""

import numpy as np
import pytest
from absl import logging
from PIL import Image

from hfgd_tf import predict, visualize
from hfgd_tf.config import ModelConfig
from hfgd_tf.ops import normalize_image
from hfgd_tf.modeling.model import build_model

NUM_CLASSES = 4
PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)]


@pytest.fixture(scope="module")
def model():
  return build_model(ModelConfig(num_classes=NUM_CLASSES, backbone="resnet_test",
                                 encoder_filters=32, decoder_filters=16))


def write_inputs(folder):
  rng = np.random.RandomState(0)
  images = {"wide": rng.randint(0, 256, (21, 34, 3)).astype(np.uint8),
            "tall": rng.randint(0, 256, (30, 17, 3)).astype(np.uint8)}
  Image.fromarray(images["wide"]).save(folder / "wide.png")
  Image.fromarray(images["tall"]).save(folder / "tall.jpg", quality=95)
  (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  (folder / "notes.txt").write_text("not an image, not listed")
  return images


@pytest.mark.parametrize("batch", [1, 2])
def test_predict_folder_skips_the_corrupt_file(model, tmp_path, batch, monkeypatch):
  inputs = tmp_path / "in"
  inputs.mkdir()
  images = write_inputs(inputs)
  warnings = []
  monkeypatch.setattr(logging, "warning", lambda msg, *args: warnings.append(msg % args))
  summary = predict.predict_images(model, str(inputs), str(tmp_path / "out"), PALETTE,
                                   scales=(0.75, 1.0), flip=True, batch=batch)

  assert sorted(name for _, name in summary.processed) == ["tall", "wide"]
  assert [path for path, _ in summary.skipped] == [str(inputs / "broken.jpg")]
  assert any("broken.jpg" in message for message in warnings)
  for name, image in images.items():
    class_map = np.asarray(Image.open(tmp_path / "out" / "class_map" / f"{name}.png"))
    assert class_map.shape == image.shape[:2] and class_map.dtype == np.uint8
    assert class_map.max() < NUM_CLASSES
    for kind in ("colour", "overlay"):
      picture = np.asarray(Image.open(tmp_path / "out" / kind / f"{name}.png"))
      assert picture.shape == image.shape
    colour = np.asarray(Image.open(tmp_path / "out" / "colour" / f"{name}.png"))
    np.testing.assert_array_equal(colour, visualize.colorize(class_map, PALETTE))


def test_single_image_prediction_runs_at_the_exact_size(model, tmp_path):
  image = np.random.RandomState(1).randint(0, 256, (19, 26, 3)).astype(np.uint8)
  Image.fromarray(image).save(tmp_path / "one.png")
  predict.predict_images(model, [str(tmp_path / "one.png")], str(tmp_path / "out"), PALETTE)
  expected = np.argmax(model(normalize_image(image[None]), training=False).numpy()[0], -1)
  np.testing.assert_array_equal(
      np.asarray(Image.open(tmp_path / "out" / "class_map" / "one.png")), expected)


def test_list_inputs_accepts_globs_and_names_the_empty_case(tmp_path):
  write_inputs(tmp_path)
  assert predict.list_inputs(str(tmp_path / "*.png")) == [str(tmp_path / "wide.png")]
  with pytest.raises(ValueError, match="no images"):
    predict.list_inputs(str(tmp_path / "*.bmp"))


def test_colorize_and_overlay():
  class_map = np.array([[0, 1], [3, 255]], np.uint8)
  colour = visualize.colorize(class_map, PALETTE)
  np.testing.assert_array_equal(colour, [[PALETTE[0], PALETTE[1]], [PALETTE[3], (0, 0, 0)]])
  image = np.full((2, 2, 3), 100, np.uint8)
  blended = visualize.overlay(image, colour, alpha=0.25)
  np.testing.assert_array_equal(blended[0, 1], [np.round(0.75 * 100 + 0.25 * 255), 75, 75])


def test_comparison_grid_puts_image_truth_and_prediction_side_by_side():
  images = np.stack([np.full((2, 3, 3), 7, np.uint8), np.full((2, 3, 3), 9, np.uint8)])
  labels = np.array([np.zeros((2, 3)), np.ones((2, 3))], np.uint8)
  predictions = np.array([np.full((2, 3), 3), np.full((2, 3), 255)], np.uint8)
  grid = visualize.comparison_grid(images, labels, predictions, PALETTE, gap=1)
  assert grid.shape == (2 * 2 + 1, 3 * 3 + 2, 3)
  np.testing.assert_array_equal(grid[3:5, 0:3], images[1])  # row 2, image
  np.testing.assert_array_equal(grid[3:5, 4:7], np.broadcast_to(PALETTE[1], (2, 3, 3)))  # truth
  np.testing.assert_array_equal(grid[0:2, 8:11], np.broadcast_to(PALETTE[3], (2, 3, 3)))  # pred
  np.testing.assert_array_equal(grid[3:5, 8:11], 0)  # ignore -> black
  np.testing.assert_array_equal(grid[2], 255)  # white gap between rows
