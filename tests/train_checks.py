"""Trainer runs under multi-replica strategies; executed in subprocesses by
tests/test_distribution.py (one strategy per process; logical devices and TF_CONFIG must be set
before TensorFlow starts).

  train_checks.py mirrored DATA_DIR WORK_DIR      -> JSON: one-device vs 2-replica results
  train_checks.py multi_worker DATA_DIR WORK_DIR  -> writes WORK_DIR/worker-<i>.npz (TF_CONFIG set)
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

if sys.argv[1] == "mirrored":
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices("CPU")[0],
      [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

# pylint: disable=wrong-import-position
from hfgd_tf import training  # noqa: E402
from hfgd_tf.config import AugmentConfig, ModelConfig, TrainConfig  # noqa: E402
from hfgd_tf.distribution import create_strategy  # noqa: E402
from tests import tiny_backbones  # noqa: E402

tiny_backbones.register()

# CAR's intra and centre-to-pixel losses average over each replica's own pixels (as the original
# did), so they differ slightly from one device; the centre-to-centre loss uses all-reduced centres.
MODEL = ModelConfig(num_classes=7, backbone="resnet_test", encoder_filters=16, cae_car_filters=16,
                    decoder_filters=16, bn_momentum=0.9, car_intra_loss=False, car_c2p_loss=False)


def _config(data_dir, checkpoint_dir, **overrides):
  values = dict(data_dir=data_dir, checkpoint_dir=checkpoint_dir,
                tensorboard_dir=os.path.join(checkpoint_dir, "tb"),
                augment=AugmentConfig(crop_height=33, crop_width=33, min_scale=1.0, max_scale=1.0),
                batch_size=4, train_steps=1, optimizer="sgd",
                learning_rate=0.02, weight_decay=1e-4, checkpoint_every=100, log_every=1,
                image_summary_every=100, shuffle_buffer=16, seed=3)
  values.update(overrides)
  return TrainConfig(**values)


def _weights(model):
  return [variable.numpy() for variable in model.weights]


def mirrored(data_dir, work_dir):
  """Two steps on one device and on 2 replicas from the same weights and the same global batch."""
  single = training.Trainer(MODEL, _config(data_dir, os.path.join(work_dir, "single")),
                            tf.distribute.OneDeviceStrategy("/cpu:0"))
  initial = _weights(single.model)
  single_results = single.train()
  strategy = create_strategy("mirrored")
  replicated = training.Trainer(MODEL, _config(data_dir, os.path.join(work_dir, "mirrored")),
                                strategy)
  for variable, value in zip(replicated.model.weights, initial):
    variable.assign(value)
  replicated_results = replicated.train()
  single_after, replicated_after = _weights(single.model), _weights(replicated.model)
  largest_update = max(float(np.abs(a - w).max()) for a, w in zip(single_after, initial))
  # Per variable: |difference of the two updates| / |update on one device|; updates that are
  # round-off (e.g. attention key biases, whose gradient is zero in exact arithmetic) are measured
  # against a floor of 1e-3 of the largest update.
  differences = sorted(
      (float(np.abs(a - b).max() / max(np.abs(a - w).max(), 1e-3 * largest_update)), variable.path)
      for a, b, w, variable in zip(single_after, replicated_after, initial, single.model.weights))
  # Two steps in one call: next() on the distributed iterator inside a tf.range loop.
  looped = training.Trainer(MODEL, _config(data_dir, os.path.join(work_dir, "looped"),
                                           train_steps=2, steps_per_loop=2, log_every=2), strategy)
  looped_results = looped.train()
  return {
      "looped": [looped_results["step"], looped_results["last_loss"]],
      "replicas": strategy.num_replicas_in_sync,
      "sync_batch_norm": [replicated.model_config.sync_batch_norm,
                          single.model_config.sync_batch_norm],
      "first_loss": [single_results["first_loss"], replicated_results["first_loss"]],
      "loss": [single_results["last_loss"], replicated_results["last_loss"]],
      "update_difference_median": float(np.median([row[0] for row in differences])),
      "max_update_difference": differences[-3:],  # the three largest
      "max_weight_change": largest_update,
  }


def multi_worker(data_dir, work_dir):
  """Three steps as one of the workers in TF_CONFIG; saves this worker's weights."""
  task_id = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
  strategy = create_strategy("multi_worker")
  trainer = training.Trainer(
      MODEL, _config(data_dir, os.path.join(work_dir, "checkpoints"), train_steps=3,
                     checkpoint_every=2), strategy)
  results = trainer.train()
  np.savez(os.path.join(work_dir, f"worker-{task_id}.npz"), *_weights(trainer.model))
  return {"replicas": strategy.num_replicas_in_sync, "step": results["step"],
          "loss": results["last_loss"]}


if __name__ == "__main__":
  check = {"mirrored": mirrored, "multi_worker": multi_worker}[sys.argv[1]]
  print(json.dumps(check(sys.argv[2], sys.argv[3])))
