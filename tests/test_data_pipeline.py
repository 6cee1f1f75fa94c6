"""The data path (hfgd_tf/data/): augmentation properties, determinism, eval padding, the iDS
reader; and the image normalisation it shares with predict and export (hfgd_tf/ops.py)."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from datasets import core, tfrecord
from hfgd_tf import ops
from hfgd_tf.config import AugmentConfig
from hfgd_tf.data import augment, pipeline

# Label id -> grey level the test images use, so an image pixel tells which label it came from.
CODES = {class_id: 20.0 + 30.0 * class_id for class_id in range(6)}


def _block_example(rng, height, width, key, block=6):
  """Random labels 0..5 in block x block tiles, the image painted with each label's code colour."""
  tiles = rng.integers(0, 6, (height // block + 1, width // block + 1))
  label = np.kron(tiles, np.ones((block, block), np.int64))[:height, :width].astype(np.uint8)
  image = np.vectorize(CODES.get)(label).astype(np.uint8)
  image = np.repeat(image[..., None], 3, axis=2)
  return core.EncodedExample(key, core.encode_png(image), "png", label)


def _write_records(path, examples, options=None):
  with tf.io.TFRecordWriter(str(path), options) as writer:
    for example in examples:
      writer.write(example if isinstance(example, bytes) else tfrecord.serialize_example(example))
  return str(path)


@pytest.fixture(name="block_records")
def fixture_block_records(tmp_path):
  rng = np.random.default_rng(0)
  examples = [_block_example(rng, 30 + i % 3, 40 - i % 4, f"ex{i}") for i in range(24)]
  _write_records(tmp_path / "train-00000-of-00002.tfrecord", examples[:12])
  _write_records(tmp_path / "train-00001-of-00002.tfrecord", examples[12:])
  return str(tmp_path / "train-*.tfrecord")


def _interior(label):
  """Pixels whose 3x3 neighbourhood has one label, [H, W] bool.

  Elsewhere bilinear image values blend neighbouring blocks; border pixels are excluded because
  their neighbours beyond a crop are unknown.
  """
  padded = np.pad(label.astype(np.int64), 1, constant_values=-1)
  same = np.ones(label.shape, bool)
  for dy in range(3):
    for dx in range(3):
      same &= padded[dy:dy + label.shape[0], dx:dx + label.shape[1]] == label
  return same


def test_normalize_image_maps_pad_to_zero_and_range_to_unit():
  values = ops.normalize_image(tf.constant([0.0, 127.5, 255.0])).numpy()
  np.testing.assert_allclose(values, [-1.0, 0.0, 1.0], atol=1e-6)
  assert ops.normalize_image(tf.constant([255], tf.uint8)).dtype == tf.float32


def test_denormalize_image_inverts_normalize_image_for_every_uint8_value():
  values = tf.range(256, dtype=tf.int32)
  restored = ops.denormalize_image(ops.normalize_image(tf.cast(values, tf.uint8)))
  assert restored.dtype == tf.uint8
  np.testing.assert_array_equal(restored.numpy(), values.numpy())
  # Out-of-range model inputs (e.g. after interpolation) clip instead of wrapping around.
  np.testing.assert_array_equal(ops.denormalize_image(tf.constant([-1.5, 1.5])).numpy(), [0, 255])


def test_scale_set_is_the_original_discrete_set():
  np.testing.assert_allclose(AugmentConfig().scales(), [0.5, 0.75, 1, 1.25, 1.5, 1.75, 2])
  assert AugmentConfig(min_scale=1, max_scale=1).scales().tolist() == [1.0]


def test_random_scale_draws_every_scale_and_floors_the_size():
  """With a crop larger than 2x the image there is no crop: the labelled area is the scaled size."""
  config = AugmentConfig(crop_height=50, crop_width=50, random_brightness=False, flip=False)
  label = tf.zeros([20, 22], tf.int32)
  image = tf.fill([20, 22, 3], 40.0)
  sizes = set()
  for index in range(60):
    _, out = augment.augment_example(image, label, config, tf.constant([3, index], tf.int64))
    rows, cols = np.nonzero(out.numpy() != 255)
    sizes.add((rows.max() + 1, cols.max() + 1))
  expected = {(int(np.floor(s * 20)), int(np.floor(s * 22))) for s in config.scales()}
  assert sizes == expected


def test_augmentation_keeps_image_and_label_aligned_and_pads_correctly():
  rng = np.random.default_rng(1)
  example = _block_example(rng, 33, 41, "x")
  image = tf.cast(tf.io.decode_png(example.image_bytes, channels=3), tf.float32)
  label = tf.constant(example.label, tf.int32)
  config = AugmentConfig(crop_height=48, crop_width=48, random_brightness=False)
  codes = np.array([CODES[k] for k in range(6)], np.float32)
  saw_pad = saw_flip_asymmetry = False
  for index in range(30):
    out_image, out_label = augment.augment_example(image, label, config, tf.constant([9, index]))
    out_image, out_label = out_image.numpy(), out_label.numpy()
    assert out_image.shape == (48, 48, 3) and out_label.shape == (48, 48)
    assert set(np.unique(out_label)) <= set(range(6)) | {255}
    pad = out_label == 255
    np.testing.assert_array_equal(out_image[pad], 127.5)
    saw_pad |= pad.any()
    inside = _interior(out_label) & ~pad
    np.testing.assert_allclose(out_image[inside][:, 0], codes[out_label[inside]], atol=1e-3)
    saw_flip_asymmetry |= not np.array_equal(out_label, out_label[:, ::-1])
  assert saw_pad and saw_flip_asymmetry


def test_flip_and_crop_follow_the_seed_and_move_image_with_label():
  """Scale off: the crop of a flipped example equals the flipped source at the same offsets."""
  rng = np.random.default_rng(2)
  example = _block_example(rng, 40, 40, "x")
  image = tf.cast(tf.io.decode_png(example.image_bytes, channels=3), tf.float32)
  label = tf.constant(example.label, tf.int32)
  config = AugmentConfig(crop_height=24, crop_width=24, min_scale=1, max_scale=1,
                            random_brightness=False)
  flips = 0
  for index in range(20):
    out_image, out_label = augment.augment_example(image, label, config, tf.constant([4, index]))
    out_label = out_label.numpy()
    candidates = []
    for flipped in (False, True):
      source = example.label[:, ::-1] if flipped else example.label
      for y in range(17):
        for x in range(17):
          if np.array_equal(source[y:y + 24, x:x + 24], out_label):
            candidates.append(flipped)
    assert candidates, "the label crop is not a crop of the (flipped) source"
    flips += candidates[0]
    np.testing.assert_allclose(out_image.numpy()[..., 0],
                               np.vectorize(CODES.get)(out_label), atol=1e-4)
  assert 3 <= flips <= 17


def test_brightness_clips_at_256_and_photometric_does_not_clip():
  image = tf.concat([tf.zeros([16, 8, 3]), tf.fill([16, 8, 3], 255.0)], axis=1)
  label = tf.zeros([16, 16], tf.int32)
  bright = AugmentConfig(crop_height=16, crop_width=16, min_scale=1, max_scale=1, flip=False)
  maxima = [augment.augment_example(image, label, bright, tf.constant([0, i]))[0].numpy().max()
            for i in range(20)]
  assert max(maxima) == 256.0  # 255 + delta clipped at 256, not 255
  assert min(maxima) < 256.0  # brightness applies with p=0.5 and delta may be negative
  photometric = AugmentConfig(crop_height=16, crop_width=16, min_scale=1, max_scale=1,
                                 flip=False, random_brightness=False, photometric_distortion=True)
  minima = [augment.augment_example(image, label, photometric, tf.constant([0, i]))[0].numpy().min()
            for i in range(20)]
  assert min(minima) < 0.0  # contrast > 1 pushed 0 below 0 and nothing clipped it


def test_train_dataset_batches_normalised_crops_deterministically(block_records):
  config = AugmentConfig(crop_height=32, crop_width=32)

  def first_batches(seed):
    ds = pipeline.train_dataset(block_records, 4, config, seed=seed, shuffle_buffer=8)
    return [(images.numpy(), labels.numpy()) for images, labels in ds.take(3)]

  run_a, run_b, other = first_batches(7), first_batches(7), first_batches(8)
  for (images_a, labels_a), (images_b, labels_b) in zip(run_a, run_b):
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(labels_a, labels_b)
  assert not all(np.array_equal(a[1], o[1]) for a, o in zip(run_a, other))
  images, labels = run_a[0]
  assert images.shape == (4, 32, 32, 3) and images.dtype == np.float32
  assert labels.shape == (4, 32, 32) and labels.dtype == np.int32
  assert images.min() >= -1.0 and images.max() <= 256 * 2 / 255 - 1 + 1e-6
  assert set(np.unique(np.concatenate([l.ravel() for _, l in run_a]))) <= set(range(6)) | {255}


def test_train_dataset_repeats_and_shards_files_per_input_pipeline(block_records):
  config = AugmentConfig(crop_height=16, crop_width=16)
  context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                       num_replicas_in_sync=2)
  ds = pipeline.train_dataset(block_records, 8, config, seed=0, input_context=context)
  batches = list(ds.take(5))  # 20 > 12 examples in this pipeline's one file: it repeats
  assert batches[0][0].shape == (4, 16, 16, 3)  # per-replica batch 8 / 2
  with pytest.raises(ValueError, match="cannot be sharded"):
    pipeline.train_dataset(block_records, 8, config,
                           input_context=tf.distribute.InputContext(3, 0, 3))


def test_validate_labels_names_the_bad_example(tmp_path):
  rng = np.random.default_rng(3)
  bad = _block_example(rng, 20, 20, "bad_one")
  bad.label[0, 0] = 9
  path = _write_records(tmp_path / "bad.tfrecord", [bad])
  config = AugmentConfig(crop_height=16, crop_width=16)
  ds = pipeline.train_dataset(path, 1, config, seed=0, validate_labels=True, num_classes=6)
  with pytest.raises(tf.errors.InvalidArgumentError, match="bad_one"):
    next(iter(ds))
  # Without validation the same record goes through.
  assert next(iter(pipeline.train_dataset(path, 1, config, seed=0)))[0].shape == (1, 16, 16, 3)


def test_eval_dataset_pads_and_keeps_sizes_and_names(block_records):
  ds = pipeline.eval_dataset(block_records, 5, 36, 44)
  batches = list(ds)
  assert [b["image"].shape[0] for b in batches] == [5, 5, 5, 5, 4]
  names = [n.decode() for b in batches for n in b["filename"].numpy()]
  assert sorted(names) == sorted(f"ex{i}" for i in range(24))
  assert names == [n.decode() for b in pipeline.eval_dataset(block_records, 5, 36, 44)
                   for n in b["filename"].numpy()]
  for batch in batches:
    for image, label, height, width in zip(batch["image"].numpy(), batch["label"].numpy(),
                                           batch["height"].numpy(), batch["width"].numpy()):
      assert height in (30, 31, 32) and width in (37, 38, 39, 40)
      assert np.all(label[height:] == 255) and np.all(label[:, width:] == 255)
      assert np.all(label[:height, :width] != 255)
      np.testing.assert_allclose(image[height:], 0.0, atol=1e-6)
      np.testing.assert_allclose(image[:height, :width, 0],
                                 np.vectorize(CODES.get)(label[:height, :width]) * 2 / 255 - 1,
                                 atol=1e-6)


def test_eval_dataset_rejects_an_image_larger_than_the_eval_size(block_records):
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"ex\d+.*larger than the eval size"):
    list(pipeline.eval_dataset(block_records, 2, 31, 64))


def test_incomplete_shards_are_never_read(tmp_path, block_records):
  del block_records
  (tmp_path / "train-00002-of-00003.tfrecord.incomplete").write_bytes(b"garbage")
  ds = pipeline.eval_dataset(str(tmp_path / "train-*"), 64, 40, 40)
  assert sum(b["image"].shape[0] for b in ds) == 24


def _ids_example(image, label, encode_jpeg=False):
  """A record in the authors' iDS layout (serialized tensors)."""
  if encode_jpeg:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=100, subsampling=0)
    image_tensor = tf.constant(buffer.getvalue())
  else:
    image_tensor = tf.constant(image, tf.float32)
  feature = {
      "image": tf.io.serialize_tensor(image_tensor).numpy(),
      "label": tf.io.serialize_tensor(tf.constant(label[..., None], tf.int32)).numpy(),
  }
  features = {key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
              for key, value in feature.items()}
  for key, value in (("height", label.shape[0]), ("width", label.shape[1]), ("depth", 3)):
    features[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


@pytest.mark.parametrize("encode_jpeg", [False, True])
@pytest.mark.parametrize("compression", ["", "ZLIB"])
def test_ids_records_decode_with_pascal_context_ignore_mapping(tmp_path, encode_jpeg, compression):
  rng = np.random.default_rng(4)
  image = np.kron(rng.integers(0, 256, (4, 5, 3)), np.ones((6, 6, 1))).astype(np.uint8)  # [24,30,3]
  raw_label = rng.integers(0, 60, (24, 30))  # iDS Pascal Context: 0 = ignore, 1..59 = classes
  raw_label[0, :3] = [0, 1, 59]
  path = _write_records(tmp_path / "val-0.tfrecord", [_ids_example(image, raw_label, encode_jpeg)],
                        tf.io.TFRecordOptions(compression_type=compression))
  batch = next(iter(pipeline.eval_dataset(path, 1, 32, 32, ids_ignore_label=0)))
  label = batch["label"][0].numpy()
  expected = np.where(raw_label == 0, 255, raw_label - 1)
  np.testing.assert_array_equal(label[:24, :30], expected)
  assert label[0, :3].tolist() == [255, 0, 58]
  decoded = (batch["image"][0].numpy()[:24, :30] + 1) * 255 / 2
  np.testing.assert_allclose(decoded, image, atol=3 if encode_jpeg else 1e-3)
  assert (batch["height"][0].numpy(), batch["width"][0].numpy()) == (24, 30)


def test_ids_and_model_garden_records_mix_and_ignore_255_is_kept(tmp_path, block_records):
  del block_records
  label = np.full((20, 20), 3)
  label[5, 5] = 255
  _write_records(tmp_path / "train-ids.tfrecord",
                 [_ids_example(np.full((20, 20, 3), 80, np.uint8), label)])
  labels = [b["label"][0].numpy()
            for b in pipeline.eval_dataset(str(tmp_path / "train-*"), 1, 40, 40)]
  assert len(labels) == 25
  assert any(l[5, 5] == 255 and l[0, 0] == 3 and l[19, 19] == 3 for l in labels)
