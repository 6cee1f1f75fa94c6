"""Evaluation: scaled sizes, sliding window, multi-scale + flip averaging, confusion-matrix mIoU
against numpy, and the same mIoU under a 2-replica MirroredStrategy (subprocess)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from hfgd_tf import evaluation, inference
from hfgd_tf.config import ModelConfig
from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.flags import checked_settings_from_flags, define_all_flags
from hfgd_tf.modeling.model import build_model
from tests.test_data_pipeline import _block_example, _write_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 4


def tiny_model():
  return build_model(ModelConfig(num_classes=NUM_CLASSES, backbone="resnet_test",
                                 encoder_filters=32, decoder_filters=16))


def random_images(shape, seed=0):
  return tf.constant(np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32))


def pointwise_model(kernel_seed=0):
  """A purely local model_fn: a fixed 1x1 convolution 3 -> NUM_CLASSES."""
  kernel = tf.constant(np.random.RandomState(kernel_seed).randn(1, 1, 3, NUM_CLASSES), tf.float32)

  def model_fn(images):
    return tf.nn.conv2d(images, kernel, 1, "SAME")
  return model_fn


@pytest.mark.parametrize("size, scale, expected", [
    (513, 0.5, 257), (513, 0.75, 385), (513, 1.75, 897), (512, 0.75, 384), (129, 0.5, 65),
    (128, 0.5, 64), (7, 0.5, 3), (100, 1.25, 125), (33, 1.0, 33),
])
def test_scaled_size_keeps_odd_sides_odd(size, scale, expected):
  assert inference.scaled_size(size, scale) == expected
  assert int(inference.scaled_size(tf.constant(size), scale)) == expected


def test_sliding_window_covering_the_image_equals_whole_image():
  model = tiny_model()
  images = random_images((2, 33, 45, 3))
  whole = model(images, training=False).numpy()
  for window in [(33, 45), 64]:
    np.testing.assert_array_equal(
        inference.sliding_window_logits(lambda x: model(x, training=False), images,
                                         window).numpy(), whole)


@pytest.mark.parametrize("window", [3, 5, 16, (9, 20), (37, 4)])
def test_sliding_window_of_a_local_model_equals_whole_image(window):
  model_fn = pointwise_model()
  images = random_images((2, 37, 50, 3))
  np.testing.assert_allclose(inference.sliding_window_logits(model_fn, images, window).numpy(),
                             model_fn(images).numpy(), rtol=1e-5, atol=1e-6)


def test_sliding_window_offsets_and_graph_mode_with_unknown_size():
  """Windows start at 0, s, 2s, ... and one flush with the end (stride floor(2/3 w))."""
  offsets = []

  def record(crop):  # channels 0/1 hold the pixel's row/column, so a crop tells its offset
    offsets.append((int(crop[0, 0, 0, 0]), int(crop[0, 0, 0, 1]), crop.shape[1], crop.shape[2]))
    return crop

  rows, cols = np.mgrid[0:37, 0:31].astype(np.float32)
  images = tf.constant(np.stack([rows, cols, rows * 0], -1)[None])  # [1, 37, 31, 3]
  out = inference.sliding_window_logits(record, images, 16)
  np.testing.assert_array_equal(out.numpy(), images.numpy())  # windows placed where they came from
  # 37: stride 10, offsets 0, 10, 20, then 21 flush with the end; 31: 0, 10 and 15.
  assert offsets == [(y, x, 16, 16) for y in (0, 10, 20, 21) for x in (0, 10, 15)]

  traced = tf.function(lambda x: inference.sliding_window_logits(pointwise_model(), x, 16),
                       input_signature=[tf.TensorSpec([None, None, None, 3])])
  for size in [(3, 40, 3), (21, 16, 3)]:
    x = random_images((2,) + size)
    np.testing.assert_allclose(traced(x).numpy(), pointwise_model()(x).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_flip_averages_the_mirrored_logits_flipped_back():
  """model_fn = x + column index: the mirrored pass sees reversed columns, so the average adds
  (W - 1) / 2 everywhere; a flip-equivariant model gives its own single-scale result."""
  images = random_images((2, 5, 8, 3))
  ramp = tf.range(8, dtype=tf.float32)[None, None, :, None]
  averaged = inference.multi_scale_logits(lambda x: x + ramp, images, flip=True)
  np.testing.assert_allclose(averaged.numpy(), images.numpy() + 3.5, rtol=1e-6, atol=1e-6)
  model_fn = pointwise_model()
  np.testing.assert_allclose(inference.multi_scale_logits(model_fn, images, flip=True).numpy(),
                             model_fn(images).numpy(), rtol=1e-6, atol=1e-6)


def test_scales_average_raw_logits_at_scaled_sizes():
  """A model whose logits equal its input height: the average is the mean scaled height, so each
  scale ran at `scaled_size` and its logits were resized back (exactly, being constant)."""
  def height_model(x):
    return tf.fill(tf.concat([tf.shape(x)[:3], [2]], 0), tf.cast(tf.shape(x)[1], tf.float32))

  images = random_images((1, 33, 20, 3))
  scales = (0.5, 0.75, 1.0, 1.25)
  expected = np.mean([inference.scaled_size(33, s) for s in scales])  # (17 + 25 + 33 + 41) / 4
  for flip in (False, True):
    out = inference.multi_scale_logits(height_model, images, scales, flip=flip)
    assert out.shape == (1, 33, 20, 2)
    np.testing.assert_allclose(out.numpy(), expected)


def test_multi_scale_flip_of_the_real_model_on_a_symmetric_image_is_symmetric():
  model = tiny_model()
  half = random_images((1, 33, 20, 3)).numpy()
  symmetric = tf.constant(np.concatenate([half, half[:, :, ::-1]], 2))  # [1, 33, 40, 3]
  model_fn = lambda x: model(x, training=False)  # noqa: E731
  logits = inference.multi_scale_logits(model_fn, symmetric, (0.75, 1.0), flip=True).numpy()
  assert logits.shape == (1, 33, 40, NUM_CLASSES)
  np.testing.assert_allclose(logits, logits[:, :, ::-1], rtol=1e-5, atol=1e-5)
  # Without flip the tiny model is not symmetric, so the check above has teeth.
  single = model_fn(symmetric).numpy()
  assert np.abs(single - single[:, :, ::-1]).max() > 1e-3
  windowed = inference.multi_scale_logits(model_fn, random_images((2, 35, 27, 3)), (0.5, 1.25),
                                           flip=True, window=(17, 24))
  assert windowed.shape == (2, 35, 27, NUM_CLASSES)
  assert np.all(np.isfinite(windowed.numpy()))


def numpy_confusion(labels, predictions, num_classes, valid):
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (labels[valid], predictions[valid]), 1)
  return cm


def test_confusion_matrix_and_iou_against_numpy():
  rng = np.random.RandomState(3)
  num_classes = 5  # class 4 appears in neither labels nor predictions
  labels = rng.randint(0, 4, size=(3, 20, 24)).astype(np.int32)
  labels[rng.rand(*labels.shape) < 0.1] = 255
  predictions = rng.randint(0, 4, size=labels.shape).astype(np.int32)
  predictions[labels == 3] = 0  # class 3: ground truth only, IoU 0 but counted
  heights, widths = np.array([20, 13, 7]), np.array([24, 9, 24])
  # Padding carries real class labels here, so only the sizes can exclude it.
  inside = ((np.arange(20)[None, :, None] < heights[:, None, None])
            & (np.arange(24)[None, None, :] < widths[:, None, None]))
  matrix = evaluation.ConfusionMatrix(num_classes)
  matrix.update(labels, predictions, heights, widths)
  expected = numpy_confusion(labels, predictions, num_classes, (labels != 255) & inside)
  np.testing.assert_array_equal(matrix.result(), expected)

  results = evaluation.iou_from_confusion(matrix.result(), num_images=3)
  tp = np.diag(expected)[:4]
  iou = tp / ((expected.sum(0) + expected.sum(1))[:4] - tp)
  np.testing.assert_allclose(results.iou[:4], iou)
  assert np.isnan(results.iou[4]) and results.iou[3] == 0
  assert results.mean_iou == pytest.approx(iou.mean())
  assert results.pixel_accuracy == pytest.approx(tp.sum() / expected.sum())
  assert results.mean_accuracy == pytest.approx(np.mean(tp / expected.sum(1)[:4]))

  matrix.update(labels, predictions)  # without sizes: only label 255 is excluded
  np.testing.assert_array_equal(
      matrix.result(), expected + numpy_confusion(labels, predictions, num_classes, labels != 255))


def padded_eval_batches(images, labels, sizes, batch_size):
  """Batches like pipeline.eval_dataset: padding is 0 in images and 255 in labels."""
  heights, widths = np.array(sizes).T
  for i, (height, width) in enumerate(sizes):
    images[i, height:] = 0
    images[i, :, width:] = 0
    labels[i, height:] = 255
    labels[i, :, width:] = 255
  return tf.data.Dataset.from_tensor_slices({
      "image": images, "label": labels, "height": heights.astype(np.int32),
      "width": widths.astype(np.int32), "filename": [f"{i}" for i in range(len(sizes))],
  }).batch(batch_size)


def test_evaluate_matches_argmax_of_multi_scale_logits_and_writes_results(tmp_path):
  model = tiny_model()
  rng = np.random.RandomState(4)
  images = rng.uniform(-1, 1, (3, 33, 41, 3)).astype(np.float32)
  labels = rng.randint(0, NUM_CLASSES, (3, 33, 41)).astype(np.int32)
  sizes = [(33, 41), (20, 41), (33, 17)]
  dataset = padded_eval_batches(images, labels, sizes, batch_size=2)
  results = evaluation.evaluate(model, dataset, NUM_CLASSES, scales=(0.75, 1.0), flip=True)

  logits = inference.multi_scale_logits(lambda x: model(x, training=False), tf.constant(images),
                                         (0.75, 1.0), flip=True)
  expected = numpy_confusion(labels, np.argmax(logits.numpy(), -1), NUM_CLASSES, labels != 255)
  np.testing.assert_array_equal(results.confusion_matrix, expected)
  assert results.num_images == 3 and expected.sum() == sum(h * w for h, w in sizes)

  names = ["sky", "road", "car", "tree"]
  table = evaluation.format_results(results, names)
  assert all(name in table for name in names) and "mIoU" in table
  path = tmp_path / "out" / "results.json"
  evaluation.write_results_json(results, names, str(path), extra={"scales": [0.75, 1.0]})
  saved = json.loads(path.read_text())
  assert saved["mean_iou"] == pytest.approx(results.mean_iou)
  assert list(saved["per_class_iou"]) == names and saved["scales"] == [0.75, 1.0]
  assert os.listdir(path.parent) == ["results.json"]  # no temporary file left behind


@pytest.mark.slow  # > 15 s on 2 cores; CI runs it
def test_mirrored_strategy_gives_the_single_device_confusion_matrix():
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tests", "mirrored_eval_checks.py")],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  checks = json.loads(result.stdout.strip().splitlines()[-1])
  assert checks["replicas"] == 2
  np.testing.assert_array_equal(checks["mirrored"], checks["single"])
  assert np.sum(checks["single"]) == checks["valid_pixels"] > 0
  assert checks["num_images"] == [5, 5]


def test_evaluate_on_the_builtin_eval_pipeline(tmp_path):
  """End to end on real eval batches (padded 128 -> 129, filenames included): every image and
  every real pixel is counted once, padding never."""
  from datasets import builtin, get_dataset_info  # pylint: disable=import-outside-toplevel
  from hfgd_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  info = get_dataset_info("builtin")
  data_dir = builtin.ensure_builtin_dataset(str(tmp_path / "builtin"), num_train=1, num_val=3)
  dataset = pipeline.eval_dataset(os.path.join(data_dir, "val-*"), 2, *info.eval_size)
  model = build_model(ModelConfig(num_classes=info.num_classes, backbone="resnet_test",
                                  encoder_filters=32, decoder_filters=16))
  results = evaluation.evaluate(model, dataset, info.num_classes)
  assert results.num_images == 3
  assert results.confusion_matrix.sum() == 3 * builtin.IMAGE_SIZE ** 2
  assert 0.0 <= results.mean_iou <= 1.0
  assert all(name in evaluation.format_results(results, info.class_names)
             for name in info.class_names)


# Varied sizes, as ADE20K's; under rescale=(64, 32) the first and last share a 32x64 bucket.
VARIED_SIZES = [(40, 90), (90, 40), (30, 30), (41, 47), (24, 100), (45, 100)]
BLOCK_CLASSES = 6  # tests/test_data_pipeline.py's block labels


def write_varied_records(path):
  """Block-label examples of VARIED_SIZES in one TFRecord file at `path`; returns it."""
  rng = np.random.default_rng(1)
  return _write_records(path, [_block_example(rng, height, width, f"ex{index}")
                               for index, (height, width) in enumerate(VARIED_SIZES)])


def _mmseg_size(height, width, long_side=64, short_side=32):
  scale = min(long_side / max(height, width), short_side / min(height, width))
  return int(height * scale + 0.5), int(width * scale + 0.5)


def test_rescaled_eval_batches_are_bucketed_by_size_with_labels_as_they_are(tmp_path,
                                                                             monkeypatch):
  from hfgd_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(pipeline, "RESCALE_BUCKET", 16)
  records = write_varied_records(tmp_path / "val-00000-of-00001.tfrecord")
  labels = {example["filename"].numpy().decode(): example["label"].numpy()
            for example in pipeline.examples(records)}
  # eval_height/width (8) are not used: the pad-only pipeline would refuse every image.
  batches = list(pipeline.eval_dataset(records, 2, 8, 8, rescale=(64, 32)))
  seen = []
  for batch in batches:
    _, bucket_height, bucket_width, _ = batch["image"].shape
    for index, name in enumerate(n.decode() for n in batch["filename"].numpy()):
      height, width = labels[name].shape
      scaled = _mmseg_size(height, width)
      assert [int(batch[key][index]) for key in ("height", "width", "scaled_height",
                                                 "scaled_width")] == [height, width, *scaled]
      assert (bucket_height, bucket_width) == (-(-scaled[0] // 16) * 16, -(-scaled[1] // 16) * 16)
      assert not np.any(batch["image"][index, scaled[0]:].numpy())  # padding is 0
      np.testing.assert_array_equal(batch["label"][index, :height, :width], labels[name])
      assert np.all(batch["label"][index, height:].numpy() == 255)
      seen.append(name)
  assert sorted(seen) == sorted(labels)
  assert [b["image"].shape[1:3] for b in batches if len(b["filename"]) == 2] == [(32, 64)]
  assert max(b["image"].shape[1] * b["image"].shape[2] for b in batches) == 64 * 32


def test_rescaled_eval_counts_every_pixel_at_the_label_resolution(tmp_path):
  from hfgd_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  from hfgd_tf.ops import normalize_image  # pylint: disable=import-outside-toplevel
  records = write_varied_records(tmp_path / "val-00000-of-00001.tfrecord")
  kernel = tf.constant(np.random.RandomState(2).randn(1, 1, 3, BLOCK_CLASSES), tf.float32)
  model = lambda images, training=False: tf.nn.conv2d(images, kernel, 1, "SAME")  # local
  results = evaluation.evaluate(
      model, pipeline.eval_dataset(records, 2, 8, 8, rescale=(64, 32)), BLOCK_CLASSES)
  # Independently, image by image without padding: mmseg's resize, logits resized back.
  expected = np.zeros([BLOCK_CLASSES] * 2, np.int64)
  for example in pipeline.examples(records):
    label = example["label"].numpy()
    image = tf.image.resize(example["image"][None], _mmseg_size(*label.shape))
    logits = tf.image.resize(model(normalize_image(image)), label.shape)
    expected += numpy_confusion(label, np.argmax(logits[0].numpy(), -1), BLOCK_CLASSES,
                                np.ones(label.shape, bool))
  np.testing.assert_array_equal(results.confusion_matrix, expected)
  assert expected.sum() == sum(height * width for height, width in VARIED_SIZES)


def test_ade20k_experiments_evaluate_rescaled_and_an_empty_flag_pads_again():
  flagfile = os.path.join(ROOT, "experiments", "ade20k",
                          "hfgd-os4_r50_bs16-160k_ade20k-150-512.cfg")

  def rescale(*arguments):
    flag_values = flags.FlagValues()
    define_all_flags(flag_values)
    flag_values(expand_flagfiles(["main.py", f"--flagfile={flagfile}", *arguments,
                                  "--mode=flops"]))
    return checked_settings_from_flags(flag_values, "flops").eval.rescale
  assert rescale() == (2048, 512)
  assert rescale("--eval_rescale=") is None
