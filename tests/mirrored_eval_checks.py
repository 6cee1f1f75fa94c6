"""Evaluates a tiny model under a 2-replica MirroredStrategy (two logical CPU devices) and on one
device; prints the confusion matrices as JSON.

Executed in a subprocess by tests/test_evaluation.py: one MirroredStrategy per process, and the
logical devices must be configured before TensorFlow initialises its runtime.
"""

import json
import sys

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

# pylint: disable=wrong-import-position
from hfgd_tf import evaluation  # noqa: E402
from hfgd_tf.config import ModelConfig  # noqa: E402
from hfgd_tf.modeling.model import build_model  # noqa: E402
from tests import tiny_backbones  # noqa: E402
from tests.test_evaluation import padded_eval_batches  # noqa: E402

tiny_backbones.register()

NUM_CLASSES = 4


def main():
  config = ModelConfig(num_classes=NUM_CLASSES, backbone="resnet_test", encoder_filters=32,
                       decoder_filters=16)
  single_model = build_model(config)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  with strategy.scope():
    mirrored_model = build_model(config)
  mirrored_model.set_weights(single_model.get_weights())

  rng = np.random.RandomState(0)
  images = rng.uniform(-1, 1, (5, 33, 29, 3)).astype(np.float32)
  labels = rng.randint(0, NUM_CLASSES + 1, (5, 33, 29)).astype(np.int32)
  labels[labels == NUM_CLASSES] = 255
  sizes = [(33, 29), (17, 29), (33, 11), (30, 25), (9, 9)]
  # Batches of 2, 2 and 1: the last leaves one replica an empty batch.
  dataset = padded_eval_batches(images, labels, sizes, batch_size=2)
  protocol = dict(scales=(0.75, 1.0), flip=True)
  single = evaluation.evaluate(single_model, dataset, NUM_CLASSES, **protocol)
  mirrored = evaluation.evaluate(mirrored_model, dataset, NUM_CLASSES, strategy=strategy,
                                 **protocol)
  json.dump({
      "replicas": strategy.num_replicas_in_sync,
      "single": single.confusion_matrix.tolist(),
      "mirrored": mirrored.confusion_matrix.tolist(),
      "num_images": [single.num_images, mirrored.num_images],
      "valid_pixels": int(np.sum(labels != 255)),
  }, sys.stdout)


if __name__ == "__main__":
  main()
