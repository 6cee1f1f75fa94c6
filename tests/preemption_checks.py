"""Training and evaluation runs that tests/test_preemption.py signals, resumes and compares; each
in its own process (one strategy per process; logical devices and the cluster must be set before
TensorFlow starts). Multi-worker runs take their cluster from SLURM_* variables when set, else
from TF_CONFIG.

  preemption_checks.py train STRATEGY DATA_DIR WORK_DIR
      16 steps of the tiny model, 2 per loop, logging every loop; resumes from and checkpoints to
      WORK_DIR/checkpoints; writes the final weights to WORK_DIR/weights-<task>.npz.
  preemption_checks.py eval multi_worker DATA_DIR WORK_DIR
      -> JSON: the val split's confusion matrix and image count under the cluster and on one
      device, from the same weights.
"""

import json
import os
import pathlib
import sys

import numpy as np
import tensorflow as tf

if sys.argv[2] == "mirrored":
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices("CPU")[0],
      [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

# pylint: disable=wrong-import-position
from absl import logging  # noqa: E402

from hfgd_tf import evaluation  # noqa: E402
from hfgd_tf import training  # noqa: E402
from hfgd_tf.data import pipeline  # noqa: E402
from hfgd_tf.precision import set_seeds  # noqa: E402
from hfgd_tf.distribution import create_strategy  # noqa: E402
from hfgd_tf.modeling.model import build_model  # noqa: E402
from tests import tiny_backbones  # noqa: E402
from tests.tiny_runs import tiny_model, tiny_train_config  # noqa: E402

tiny_backbones.register()

TRAIN_STEPS = 16
STEPS_PER_LOOP = 2


def _strategy(name):
  resolver = None
  if name == "multi_worker":
    resolver = "slurm" if "SLURM_PROCID" in os.environ else "tf_config"
  port_base = int(os.environ.get("TEST_SLURM_PORT_BASE", "8888"))
  return create_strategy(name, cluster_resolver=resolver, slurm_port_base=port_base)


def _task_id(strategy):
  resolver = getattr(strategy, "cluster_resolver", None)
  return (resolver.task_id or 0) if resolver is not None else 0


def train(strategy_name, data_dir, work_dir):
  """A deterministic run (one device: bit-reproducible, its iterator checkpointed)."""
  deterministic = strategy_name == "one_device"
  set_seeds(5, deterministic)
  strategy = _strategy(strategy_name)
  work = pathlib.Path(work_dir)
  config = tiny_train_config(
      data_dir, work / "checkpoints", train_steps=TRAIN_STEPS, steps_per_loop=STEPS_PER_LOOP,
      log_every=STEPS_PER_LOOP, checkpoint_every=100, deterministic=deterministic,
      batch_size=2 * strategy.num_replicas_in_sync, seed=5)
  trainer = training.Trainer(tiny_model(), config, strategy)
  results = trainer.train()
  np.savez(work / f"weights-{_task_id(strategy)}.npz",
           *[variable.numpy() for variable in trainer.model.weights])
  return {"step": results["step"], "replicas": strategy.num_replicas_in_sync}


def evaluate(strategy_name, data_dir, work_dir):
  """The same weights evaluated on the val split under the cluster and on one device."""
  del work_dir
  set_seeds(5, False)
  strategy = _strategy(strategy_name)
  config = tiny_model()
  with strategy.scope():
    model = build_model(config)
  single_model = build_model(config)
  single_model.set_weights(model.get_weights())
  source = pipeline.split_source("builtin", data_dir, "val")

  def confusion(model_, strategy_):
    dataset = pipeline.eval_dataset(source, 2, 128, 128)
    results = evaluation.evaluate(model_, dataset, config.num_classes, scales=(1.0,),
                                  strategy=strategy_)
    return results.confusion_matrix.tolist(), results.num_images

  cluster, single = confusion(model, strategy), confusion(single_model, None)
  return {"cluster": cluster[0], "cluster_images": cluster[1], "single": single[0],
          "single_images": single[1], "replicas": strategy.num_replicas_in_sync,
          "task": _task_id(strategy)}


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  check = {"train": train, "eval": evaluate}[sys.argv[1]]
  print(json.dumps(check(*sys.argv[2:5])))
