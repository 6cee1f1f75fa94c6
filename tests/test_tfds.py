"""TensorFlow Datasets as a source (`--dataset=tfds:...`), never downloading anything.

A "prepared" dataset here is its real metadata (dataset_info.json, written by TFDS from the
installed builder) in a temporary data folder; `tfds.testing.mock_data` then serves the records,
which the tests craft so every label pixel has a known expected class. Oxford-IIIT Pet is also
written as real TFDS shards (TFDS serialising crafted examples), read by TFDS's own reader.
"""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from datasets import cityscapes, tfds_adapters
from hfgd_tf import evaluation
from hfgd_tf import training
from hfgd_tf.config import AugmentConfig, FlagError, ModelConfig, TrainConfig
from hfgd_tf.data import pipeline
from hfgd_tf.flags import checked_settings_from_flags, define_all_flags
from tests.experiment_data import write_pet_shards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CITYSCAPES = "tfds:cityscapes/semantic_segmentation"
PETS = "tfds:oxford_iiit_pet"

# Every gtFine labelId once, the license plate (255) and ids repeated; expected via the converter's
# table, checked against hand-written trainIds in tests/test_convert.py.
CITYSCAPES_RAW = np.array([[0, 1, 2, 3, 4, 5, 6, 7],
                           [8, 9, 10, 11, 12, 13, 14, 15],
                           [16, 17, 18, 19, 20, 21, 22, 23],
                           [24, 25, 26, 27, 28, 29, 30, 31],
                           [32, 33, 255, 7, 26, 24, 23, 33]], np.uint8)
CITYSCAPES_EXPECTED = np.array([[255, 255, 255, 255, 255, 255, 255, 0],
                                [1, 255, 255, 2, 3, 4, 255, 255],
                                [255, 5, 255, 6, 7, 8, 9, 10],
                                [11, 12, 13, 14, 15, 255, 255, 16],
                                [17, 18, 255, 0, 13, 11, 10, 18]])
# Trimap: 1 pet -> 1, 2 background -> 0, 3 border -> ignore.
PETS_RAW = np.array([[2, 2, 3, 1, 1],
                     [2, 3, 1, 1, 3],
                     [3, 1, 1, 2, 2]], np.uint8)
PETS_EXPECTED = np.array([[0, 0, 255, 1, 1],
                          [0, 255, 1, 1, 255],
                          [255, 1, 1, 0, 0]])


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _image(height, width, seed):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _tile(raw, height, width):
  return np.resize(raw, (height, width)) if raw.shape != (height, width) else raw


def _examples(name, split, count=4, size=(5, 8)):
  """Crafted examples of `name`: (id, image uint8 [H, W, 3], raw label uint8 [H, W])."""
  raw = CITYSCAPES_RAW if name == CITYSCAPES else PETS_RAW
  return [(f"{split}_{index}", _image(*size, seed=index), _tile(raw, *size))
          for index in range(count)]


def _prepare(data_dir, name, splits):
  """Writes the dataset's real TFDS metadata with `splits` {name: count}: TFDS sees it prepared."""
  adapter = tfds_adapters.get_adapter(name)
  builder = tfds.builder(adapter.tfds_name, data_dir=str(data_dir))
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[count], num_bytes=0,
                          filename_template=tfds.core.ShardedFileTemplate(
                              data_dir=builder.data_dir, dataset_name=builder.name, split=split,
                              filetype_suffix="tfrecord"))
      for split, count in splits.items()]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)


@contextlib.contextmanager
def _mock(data_dir, name, examples_by_split):
  """TFDS mock serving `examples_by_split` as the reader returns them for the source's decoders:
  only the adapter's features, image and label still encoded."""
  adapter = tfds_adapters.get_adapter(name)

  def as_dataset(builder, split, decoders=None, read_config=None, shuffle_files=False):
    del builder, read_config, shuffle_files
    assert isinstance(decoders, tfds.decode.PartialDecoding)
    for feature in (adapter.image_feature, adapter.label_feature):
      assert isinstance(decoders.decoders[feature], tfds.decode.SkipDecoding)
    examples = examples_by_split[split]
    return tf.data.Dataset.from_tensor_slices({
        adapter.id_feature: [example_id for example_id, _, _ in examples],
        adapter.image_feature: [_png(image) for _, image, _ in examples],
        adapter.label_feature: [_png(raw) for _, _, raw in examples]})

  with tfds.testing.mock_data(as_dataset_fn=as_dataset, data_dir=str(data_dir)):
    yield


def _eval_examples(name, data_dir, split, eval_size=(8, 8)):
  """filename -> (image uint8, label) through the evaluation pipeline, padding cut off."""
  source = pipeline.split_source(name, str(data_dir), split)
  examples = {}
  for batch in pipeline.eval_dataset(source, 2, *eval_size):
    for index in range(batch["image"].shape[0]):
      height, width = int(batch["height"][index]), int(batch["width"][index])
      image = np.round((batch["image"][index, :height, :width].numpy() + 1) * 127.5)
      examples[batch["filename"][index].numpy().decode()] = (
          image.astype(np.uint8), batch["label"][index, :height, :width].numpy())
  return examples


@pytest.mark.parametrize("name,split,expected", [
    (CITYSCAPES, "val", CITYSCAPES_EXPECTED), (PETS, "test", PETS_EXPECTED)])
def test_labels_are_mapped_pixel_by_pixel(tmp_path, name, split, expected):
  tfds_split = tfds_adapters.get_adapter(name).split_aliases.get(split, split)
  size = expected.shape
  examples = _examples(name, tfds_split, count=3, size=size)
  _prepare(tmp_path, name, {tfds_split: 3})
  with _mock(tmp_path, name, {tfds_split: examples}):
    decoded = _eval_examples(name, tmp_path, split)
  assert sorted(decoded) == [example_id for example_id, _, _ in examples]
  for example_id, image, _ in examples:
    np.testing.assert_array_equal(decoded[example_id][1], expected)
    np.testing.assert_array_equal(decoded[example_id][0], image)  # PNG: lossless


def test_cityscapes_adapter_reuses_the_converters_label_table():
  adapter = tfds_adapters.get_adapter(CITYSCAPES)
  np.testing.assert_array_equal(adapter.label_lut, cityscapes.LABEL_ID_LUT)
  assert adapter.info.class_names == cityscapes.INFO.class_names
  assert adapter.info.palette == cityscapes.INFO.palette


def test_large_pet_images_are_downscaled_to_the_eval_pad(tmp_path):
  examples = [("wide", _image(300, 600, 0), np.full((300, 600), 1, np.uint8)),
              ("small", _image(20, 10, 1), np.full((20, 10), 2, np.uint8))]
  _prepare(tmp_path, PETS, {"test": 2})
  with _mock(tmp_path, PETS, {"test": examples}):
    decoded = _eval_examples(PETS, tmp_path, "test", eval_size=(513, 513))
  assert decoded["wide"][1].shape == (256, 513)  # 300 * 513 // 600 = 256
  assert (decoded["wide"][1] == 1).all()
  assert decoded["small"][1].shape == (20, 10) and (decoded["small"][1] == 0).all()


def test_an_unknown_label_value_names_the_example(tmp_path):
  examples = [("aachen_1", _image(2, 2, 0), np.array([[7, 40], [7, 7]], np.uint8))]
  _prepare(tmp_path, CITYSCAPES, {"validation": 1})
  with _mock(tmp_path, CITYSCAPES, {"validation": examples}):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{CITYSCAPES}:validation:aachen_1.*\n?.*40"):
      _eval_examples(CITYSCAPES, tmp_path, "val")


@pytest.mark.slow
@pytest.mark.parametrize("name,eval_split", [(CITYSCAPES, "val")])
def test_a_training_step_and_an_eval_pass_through_each_adapter(tmp_path, name, eval_split):
  """Cityscapes on mock data; Oxford-IIIT Pet runs through main.py on real shards below."""
  adapter = tfds_adapters.get_adapter(name)
  eval_tfds_split = adapter.split_aliases.get(eval_split, eval_split)
  data = {"train": _examples(name, "train", count=4, size=(40, 48)),
          eval_tfds_split: _examples(name, eval_tfds_split, count=3, size=(40, 48))}
  _prepare(tmp_path / "data", name, {split: len(examples) for split, examples in data.items()})
  model_config = ModelConfig(num_classes=adapter.info.num_classes, backbone="resnet_test",
                             encoder_filters=16, cae_car_filters=16, decoder_filters=16)
  config = TrainConfig(
      dataset=name, data_dir=str(tmp_path / "data"), eval_split=eval_split,
      checkpoint_dir=str(tmp_path / "run"), tensorboard_dir=str(tmp_path / "run" / "tb"),
      augment=AugmentConfig(crop_height=33, crop_width=33), batch_size=2, train_steps=1,
      optimizer="adamw", learning_rate=1e-3, checkpoint_every=1, log_every=1,
      image_summary_every=100, shuffle_buffer=4, seed=0, validate_labels=True)
  with _mock(tmp_path / "data", name, data):
    validation = evaluation.PeriodicEval(
        pipeline.split_source(name, config.data_dir, eval_split), adapter.info.num_classes, 48, 48,
        batch_size=2)
    trainer = training.Trainer(model_config, config, tf.distribute.OneDeviceStrategy("/cpu:0"),
                               palette=adapter.info.palette, validation=validation)
    results = trainer.train()
    assert results["step"] == 1 and np.isfinite(results["last_loss"])
    evaluated = evaluation.evaluate(trainer.model, validation.dataset, adapter.info.num_classes,
                                    log_every=0)
  assert 0.0 <= evaluated.mean_iou <= 1.0
  # Every labelled pixel of the three 40x48 eval images is counted, padding and ignore never.
  expected = sum(int((label != 255).sum()) for label in (
      np.asarray(adapter.label_lut)[raw] for _, _, raw in data[eval_tfds_split]))
  assert int(np.sum(evaluated.confusion_matrix)) == expected


def _settings(*arguments, mode="train"):
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(["main.py", *arguments])
  return checked_settings_from_flags(flag_values, mode)


def test_dataset_flag_accepts_adapters_and_names_itself_for_anything_else(tmp_path):
  settings = _settings(f"--dataset={PETS}", "--mode=export", mode="export")
  assert settings.dataset_info.class_names == ("background", "pet")
  assert settings.model.num_classes == 2
  assert settings.train.model_dir == os.path.join("runs", "tfds_oxford_iiit_pet")
  with pytest.raises(flags.IllegalFlagValueError,
                     match=r"--dataset=tfds:scene_parse150.*no TFDS adapter.*oxford_iiit_pet"):
    _settings("--dataset=tfds:scene_parse150")
  with pytest.raises(flags.IllegalFlagValueError, match=r"--dataset=nope.*unknown dataset"):
    _settings("--dataset=nope")


def test_a_missing_dataset_names_the_command_that_prepares_it(tmp_path):
  with pytest.raises(FlagError) as error:
    _settings(f"--dataset={PETS}", f"--data_dir={tmp_path}", "--eval_split=test")
  message = str(error.value)
  assert message.startswith("--data_dir: tfds:oxford_iiit_pet (version ")
  assert message.endswith(f"prepare it with: python3 -m datasets.tfds_build "
                          f"--dataset={PETS} --data_dir={tmp_path}")
  with pytest.raises(FlagError, match=r"--manual_dir=<folder with leftImg8bit_trainvaltest\.zip"):
    _settings(f"--dataset={CITYSCAPES}", f"--data_dir={tmp_path}")
  assert not os.listdir(tmp_path)  # the check wrote nothing


def test_a_missing_split_names_the_flag_and_the_splits(tmp_path):
  _prepare(tmp_path, PETS, {"train": 2, "test": 2})
  with pytest.raises(FlagError, match=r"^--eval_split: tfds:oxford_iiit_pet has no split 'val'; "
                                      r"its splits: test, train$"):
    _settings(f"--dataset={PETS}", f"--data_dir={tmp_path}")
  settings = _settings(f"--dataset={PETS}", f"--data_dir={tmp_path}", "--eval_split=test",
                       "--train_split=train[:50%]")
  assert settings.train.eval_split == "test"


def test_main_reports_a_missing_dataset_in_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "main.py"),
       f"--flagfile={ROOT}/experiments/oxford_iiit_pet/"
       "hfgd-os4_r50_bs16-20k_oxford-iiit-pet-513.cfg",
       f"--data_dir={tmp_path}", "--backbone_weights=none"],
      capture_output=True, text=True, env=env, timeout=120, check=False)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --data_dir: tfds:oxford_iiit_pet (version ")
  assert f"python3 -m datasets.tfds_build --dataset={PETS} --data_dir={tmp_path}" in last


def test_runs_on_other_datasets_never_import_tensorflow_datasets(tmp_path):
  script = (
      "import sys\n"
      "from absl import flags\n"
      "from hfgd_tf import training\n"
      "from hfgd_tf.data import pipeline\n"
      "from hfgd_tf.flags import checked_settings_from_flags, define_all_flags\n"
      "values = flags.FlagValues()\n"
      "define_all_flags(values)\n"
      f"values(['main.py', '--data_dir={tmp_path}'])\n"
      "settings = checked_settings_from_flags(values, 'train')\n"
      "pipeline.split_source(settings.train.dataset, settings.train.data_dir, 'train')\n"
      "assert 'tensorflow_datasets' not in sys.modules, 'imported'\n")
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]


def test_real_pet_shards_are_mapped_and_sharded_per_input_pipeline(tmp_path):
  pet, background = np.full((20, 30), 1, np.uint8), np.full((20, 30), 2, np.uint8)
  trimaps = write_pet_shards(tmp_path, {"train": [[pet, pet], [background, background]],
                                         "test": [[PETS_RAW, _tile(PETS_RAW, 7, 9)]]})
  decoded = _eval_examples(PETS, tmp_path, "test", eval_size=(16, 16))
  assert sorted(decoded) == ["test_0_0.jpg", "test_0_1.jpg"]
  np.testing.assert_array_equal(decoded["test_0_0.jpg"][1], PETS_EXPECTED)
  np.testing.assert_array_equal(decoded["test_0_1.jpg"][1],
                                np.asarray(tfds_adapters.get_adapter(PETS).label_lut)[
                                    trimaps["test_0_1.jpg"]])
  # Two input pipelines read one shard each: one sees only pets, the other only background.
  source = pipeline.split_source(PETS, str(tmp_path), "train")
  seen = []
  for pipeline_id in range(2):
    context = tf.distribute.InputContext(2, pipeline_id, 2)
    labels = [label.numpy() for _, label in pipeline.train_dataset(
        source, 4, AugmentConfig(crop_height=17, crop_width=17), seed=0,
        input_context=context).take(3)]
    seen.append(set(np.unique(labels)) - {255})
  assert sorted(seen, key=min) == [{0}, {1}]


@pytest.mark.slow
def test_main_trains_evaluates_predicts_and_exports_from_real_pet_shards(tmp_path):
  rng = np.random.default_rng(0)
  trimaps = [rng.integers(1, 4, (40, 48), dtype=np.uint8) for _ in range(6)]
  write_pet_shards(tmp_path / "tfds", {"train": [trimaps[:4]], "test": [trimaps[4:]]})
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "main.py"), f"--dataset={PETS}",
       f"--data_dir={tmp_path / 'tfds'}", "--eval_split=test", f"--model_dir={tmp_path / 'run'}",
       "--backbone=resnet_tiny", "--encoder_filters=16", "--cae_car_filters=16",
       "--decoder_filters=16", "--train_steps=2", "--batch_size=2", "--crop_height=33",
       "--crop_width=33", "--eval_height=48", "--eval_width=48", "--eval_batch_size=2",
       "--optimizer=adamw", "--learning_rate=0.001", "--predict_after_train",
       "--export_after_train", "--validate_labels"],
      capture_output=True, text=True, env=env, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "run" / "eval_results.json") as f:
    results = json.load(f)
  assert results["dataset"] == PETS and results["split"] == "test"
  assert sorted(os.listdir(tmp_path / "run" / "predictions"))
  assert os.path.isfile(tmp_path / "run" / "export" / "1" / "saved_model.pb")


def test_tfds_build_names_the_adapters_for_an_unknown_dataset():
  result = subprocess.run(
      [sys.executable, "-m", "datasets.tfds_build", "--dataset=tfds:scene_parse150"],
      capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: --dataset: no TFDS adapter for 'tfds:scene_parse150'; adapters exist for "
      "tfds:cityscapes/semantic_segmentation, tfds:oxford_iiit_pet")
