"""Runs under a 2-replica MirroredStrategy on two logical CPU devices; prints JSON results.

Executed in a subprocess by tests/test_distributed.py: one MirroredStrategy per process, and the
logical devices must be configured before TensorFlow initialises its runtime.
"""

import json
import sys

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras  # noqa: E402  pylint: disable=wrong-import-position

# pylint: disable-next=wrong-import-position
from hfgd_tf.modeling.car import class_centers, one_hot_labels  # noqa: E402


def car_centres(strategy):
  """Centres from each replica's half of the batch vs the whole batch on one device."""
  rng = np.random.RandomState(0)
  features = rng.randn(4, 3, 3, 5).astype(np.float32)
  labels = rng.randint(0, 4, size=(4, 3, 3)).astype(np.int32)
  labels[labels == 3] = 255

  def centres(x, y):
    return class_centers(tf.reshape(x, [-1, 5]),
                         tf.reshape(one_hot_labels(y, 4, 255), [-1, 4]))

  single = centres(features, labels).numpy()
  dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(4)
  batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
  per_replica = strategy.run(centres, args=batch)
  replicas = [t.numpy() for t in strategy.experimental_local_results(per_replica)]
  return {"single": single.tolist(), "replicas": [r.tolist() for r in replicas]}


def sync_bn_statistics(strategy):
  """Moving statistics of synchronized BN on 2 replicas vs plain BN on one device."""
  rng = np.random.RandomState(1)
  images = (rng.randn(4, 5, 5, 3) * [1, 2, 3] + [0, 1, -1]).astype(np.float32)

  def statistics(layer):
    return [layer.moving_mean.numpy().tolist(), layer.moving_variance.numpy().tolist()]

  single = keras.layers.BatchNormalization(momentum=0.5)
  single(images, training=True)
  with strategy.scope():
    synced = keras.layers.BatchNormalization(momentum=0.5, synchronized=True)
    synced.build((None, 5, 5, 3))
  dataset = tf.data.Dataset.from_tensor_slices(images).batch(4)
  batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

  @tf.function
  def step(x):
    strategy.run(lambda t: synced(t, training=True), args=(x,))

  step(batch)
  return {"single": statistics(single), "synced": statistics(synced)}


if __name__ == "__main__":
  mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  checks = {"car_centres": car_centres, "sync_bn": sync_bn_statistics}
  json.dump({name: checks[name](mirrored) for name in sys.argv[1:]}, sys.stdout)
