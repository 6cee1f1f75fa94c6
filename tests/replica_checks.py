"""What must hold on every replica, checked under a 2-replica MirroredStrategy on two logical CPU
devices; prints one JSON object {check: result, or {"error": ...}}.

  replica_checks.py DATA_DIR WORK_DIR CHECK...

Executed in a subprocess by tests/test_replicas.py: one MirroredStrategy per process, and the
logical devices must be configured before TensorFlow initialises its runtime.
"""

import json
import os
import sys
import traceback

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

# pylint: disable=wrong-import-position
import keras  # noqa: E402

from hfgd_tf import distribution  # noqa: E402
from hfgd_tf import training  # noqa: E402
from hfgd_tf.config import AugmentConfig, ModelConfig, TrainConfig  # noqa: E402
from hfgd_tf.evaluation import PeriodicEval  # noqa: E402
from hfgd_tf.modeling.layers.common import DropPath  # noqa: E402
from hfgd_tf.modeling.model import build_model  # noqa: E402
from tests import tiny_backbones  # noqa: E402

tiny_backbones.register()

MODEL = ModelConfig(num_classes=7, backbone="resnet_test", encoder_filters=16, cae_car_filters=16,
                    decoder_filters=16, bn_momentum=0.9)


def _config(data_dir, work_dir, name, **overrides):
  values = dict(data_dir=data_dir, checkpoint_dir=os.path.join(work_dir, name),
                tensorboard_dir=os.path.join(work_dir, name, "tb"),
                augment=AugmentConfig(crop_height=33, crop_width=33, min_scale=1.0, max_scale=1.0),
                batch_size=4, train_steps=1, optimizer="sgd", learning_rate=0.02,
                shuffle_buffer=16, seed=3)
  values.update(overrides)
  return TrainConfig(**values)


def jit_on_is_refused(strategy, data_dir, work_dir):
  """--jit_compile=on with two local replicas: the trainer's error (a FlagError), before a step."""
  trainer = training.Trainer(MODEL, _config(data_dir, work_dir, "jit_on", jit_compile="on"),
                              strategy)
  trainer._train_step(trainer.iterator)
  return {"trained": True}


def jit_auto_is_off(strategy, data_dir, work_dir):
  """--jit_compile=auto where auto means on (a GPU box): the train step of two local replicas is
  not compiled, and it trains."""
  gpu_box = lambda jit_compile="auto", strategy=None: jit_compile != "off"
  patched = {module: module.use_jit_compile for module in (distribution, training)
             if hasattr(module, "use_jit_compile")}
  try:
    for module in patched:
      module.use_jit_compile = gpu_box
    trainer = training.Trainer(MODEL, _config(data_dir, work_dir, "jit_auto"), strategy)
    loss, _ = trainer._train_step(trainer.iterator)
  finally:
    for module, function in patched.items():
      module.use_jit_compile = function
  return {"jit_compile": bool(trainer._compiled_step._jit_compile), "loss": float(loss)}


def float16_overflow_on_replica_1(strategy, data_dir, work_dir):
  """One float16 step in which one gradient is non-finite on replica 1 only: its loss gains
  3e38 x sum(w) of one kernel, whose gradient at loss scale 4 is inf (float32's largest is 3.4e38),
  off every synchronized BN, which would all-reduce an inf into replica 0's gradients too. The
  scale starts at 4 (the initial 32768 overflows this model's float16 gradients on every replica).
  Returns the weights' state after the step and the loss scale before/after."""
  losses = training.segmentation_losses
  overflowing = {}

  def overflowing_on_replica_1(outputs, labels, model_config):
    total, terms = losses(outputs, labels, model_config)
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    factor = tf.where(tf.equal(replica, 1), 3e38, 0.0)
    return total + factor * tf.reduce_sum(overflowing["kernel"]), terms
  training.segmentation_losses = overflowing_on_replica_1
  try:
    trainer = training.Trainer(
        MODEL, _config(data_dir, work_dir, "float16", mixed_precision="float16",
                       jit_compile="off"), strategy)
    overflowing["kernel"] = trainer.model.trainable_variables[-1]
    trainer.optimizer.dynamic_scale.assign(4.0)
    before = [variable.numpy() for variable in trainer.model.weights]
    trainer._train_step(trainer.iterator)
  finally:
    training.segmentation_losses = losses
  after = [variable.numpy() for variable in trainer.model.weights]
  trainable = {id(variable) for variable in trainer.model.trainable_weights}
  return {
      "finite": all(np.isfinite(weights).all() for weights in after),
      "trainable_unchanged": all(
          np.array_equal(old, new) for old, new, variable in zip(
              before, after, trainer.model.weights) if id(variable) in trainable),
      "scale": [4.0, float(trainer.optimizer.dynamic_scale.numpy())],
  }


def drop_path_masks(strategy, data_dir, work_dir):
  """The masks DropPath(0.5) draws for 16 samples on each replica, in two successive steps."""
  del data_dir, work_dir
  keras.mixed_precision.set_global_policy("float32")
  with strategy.scope():
    layer = DropPath(0.5)

  @tf.function
  def step():
    return strategy.run(lambda: layer(tf.ones([16, 1]), training=True)[:, 0])
  return [[mask.numpy().tolist() for mask in strategy.experimental_local_results(step())]
          for _ in range(2)]


class _ReplicaRecorder:
  """A model stand-in that records the replica count of every context it is called in."""

  def __init__(self, model):
    self.model = model
    self.replicas = set()

  def __call__(self, images, training=False):
    self.replicas.add(tf.distribute.get_replica_context().num_replicas_in_sync)
    return self.model(images, training=training)


def periodic_eval_replicas(strategy, data_dir, work_dir):
  """The replica counts periodic eval and the TensorBoard samples run the model in."""
  del work_dir
  keras.mixed_precision.set_global_policy("float32")
  with strategy.scope():
    model = build_model(MODEL)
  validation = PeriodicEval(os.path.join(data_dir, "val-*.tfrecord"), 7, 129, 129, batch_size=2,
                            max_examples=4, strategy=strategy)
  recorder = _ReplicaRecorder(model)
  results = validation.evaluate(recorder)
  evaluated = sorted(recorder.replicas)
  recorder.replicas.clear()
  images, _, predictions = validation.sample(recorder, count=3)
  return {"evaluate": evaluated, "sample": sorted(recorder.replicas),
          "miou": results["miou"], "shapes": [images.shape[:3].as_list(),
                                              predictions.shape.as_list()]}


def rescaled_eval_on_two_replicas(strategy, data_dir, work_dir):
  """Confusion matrices of rescaled eval (pipeline.eval_dataset(rescale=...)) on the varied-size
  records DATA_DIR/varied-*.tfrecord: the 2-replica one and the one-device one."""
  del work_dir
  from hfgd_tf import evaluation  # pylint: disable=import-outside-toplevel
  from hfgd_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  keras.mixed_precision.set_global_policy("float32")
  config = ModelConfig(num_classes=6, backbone="resnet_test", encoder_filters=16,
                       decoder_filters=16)
  single_model = build_model(config)
  with strategy.scope():
    model = build_model(config)
  model.set_weights(single_model.get_weights())
  dataset = pipeline.eval_dataset(os.path.join(data_dir, "varied-*.tfrecord"), 2, 8, 8,
                                  rescale=(64, 32))
  results = [evaluation.evaluate(subject, dataset, 6, strategy=where, log_every=0)
             for subject, where in ((single_model, None), (model, strategy))]
  return [result.confusion_matrix.tolist() for result in results]


CHECKS = {check.__name__: check for check in (
    jit_on_is_refused, jit_auto_is_off, float16_overflow_on_replica_1, drop_path_masks,
    periodic_eval_replicas, rescaled_eval_on_two_replicas)}


def main(data_dir, work_dir, names):
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  results = {}
  for name in names:
    try:
      results[name] = CHECKS[name](strategy, data_dir, work_dir)
    except Exception as error:  # pylint: disable=broad-except  (reported to the test)
      results[name] = {"error": f"{type(error).__name__}: {error}"[:2000],
                       "traceback": traceback.format_exc()[-2000:]}
  json.dump(results, sys.stdout)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], sys.argv[3:])
