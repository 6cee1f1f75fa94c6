r"""Throughput of the training and evaluation input pipelines on synthetic Pascal-Context-like data.

  python -m benchmarks.input_pipeline [--num_images=64 --batch_size=8 --seconds=20]

Writes JPEG records of about 500x375 (the typical PASCAL VOC size) to a temporary directory, then
times batches of the training pipeline (513x513 crops, default augmentation) and of the evaluation
pipeline (padded to 513x513), after a warm-up. With `--model_images_per_second` (the model's
training throughput) it also prints how many times faster the pipeline is; it must be well above 1.
"""

import io
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

from datasets import core, records
from hfgd_tf.quiet_import import import_tensorflow_quietly

tf = import_tensorflow_quietly()

from datasets import tfrecord  # pylint: disable=wrong-import-position  (after the quiet TF import)
from hfgd_tf.config import IGNORE_LABEL, AugmentConfig
from hfgd_tf.data import pipeline  # pylint: disable=wrong-import-position

_NUM_IMAGES = flags.DEFINE_integer("num_images", 64, "Synthetic records to write.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 8, "Shard files they are spread over.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Batch size.")
_SECONDS = flags.DEFINE_float("seconds", 20.0, "Timing duration per pipeline, after warm-up.")
_CROP = flags.DEFINE_integer("crop", 513, "Training crop and eval size.")
_MODEL_IMAGES_PER_SECOND = flags.DEFINE_float(
    "model_images_per_second", None, "Model training throughput, to print the ratio.")


def _synthetic_example(rng, index):
  """A blocky random image with noise (JPEG-compresses like a photo) and block labels 0..58, 255."""
  height, width = (375, 500) if index % 2 else (500, 375)
  coarse = rng.uniform(0, 255, (height // 25 + 1, width // 25 + 1, 3))
  image = np.kron(coarse, np.ones((25, 25, 1)))[:height, :width]  # [H, W, 3]
  image += rng.normal(0, 12, image.shape)
  buffer = io.BytesIO()
  Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=95)
  label = np.kron(rng.integers(0, 60, (height // 25 + 1, width // 25 + 1)),
                  np.ones((25, 25), np.int64))[:height, :width].astype(np.uint8)
  label[label == 59] = IGNORE_LABEL
  return core.EncodedExample(f"synthetic_{index:05d}", buffer.getvalue(), "jpeg", label)


def _write_records(directory):
  rng = np.random.default_rng(0)
  examples = [_synthetic_example(rng, index) for index in range(_NUM_IMAGES.value)]
  bounds = np.linspace(0, len(examples), _NUM_SHARDS.value + 1).astype(int)
  for shard in range(_NUM_SHARDS.value):
    path = f"{directory}/{records.shard_filename('train', shard, _NUM_SHARDS.value)}"
    with tf.io.TFRecordWriter(path) as writer:
      for example in examples[bounds[shard]:bounds[shard + 1]]:
        writer.write(tfrecord.serialize_example(example))
  return f"{directory}/{records.finished_shard_pattern('train')}"


def _images_per_second(batches, batch_of, seconds, warmup_batches=3):
  iterator = iter(batches)
  for _ in range(warmup_batches):
    next(iterator)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    count += batch_of(next(iterator))
  return count / (time.perf_counter() - start)


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as directory:
    pattern = _write_records(directory)
    crop = _CROP.value
    train = pipeline.train_dataset(
        pattern, _BATCH_SIZE.value, AugmentConfig(crop_height=crop, crop_width=crop), seed=0)
    train_rate = _images_per_second(train, lambda batch: int(batch[0].shape[0]), _SECONDS.value)
    evaluation = pipeline.eval_dataset(pattern, _BATCH_SIZE.value, crop, crop).repeat()
    eval_rate = _images_per_second(evaluation, lambda batch: int(batch["image"].shape[0]),
                                   _SECONDS.value)
  print(f"train pipeline: {train_rate:.1f} images/s ({crop}x{crop} crops, batch "
        f"{_BATCH_SIZE.value}, default augmentation)")
  print(f"eval pipeline:  {eval_rate:.1f} images/s (padded to {crop}x{crop})")
  if _MODEL_IMAGES_PER_SECOND.value:
    print(f"train pipeline / model training throughput: "
          f"{train_rate / _MODEL_IMAGES_PER_SECOND.value:.1f}x")


if __name__ == "__main__":
  app.run(main)
