"""Checkpoint contents keyed by variable path, and restoring a model's weights from them.

`tf.train.Checkpoint(model=keras_model)` follows TF's object graph, which in Keras 3 does not reach
layers held in Python lists (e.g. CAE's leading convs): their trainable weights would only be saved
through the optimizer's variable list and their batch-norm statistics not at all. Checkpointing
{variable.path: variable} dicts instead saves every variable under a readable name, and lets a model
be restored without its optimizer (eval, predict, export).
"""

import dataclasses

import tensorflow as tf
from absl import logging

from hfgd_tf.config import FlagError
from hfgd_tf.modeling.model import build_model

# Where a training checkpoint keeps the tf.data iterator state and the step.
_ITERATOR_KEY = "iterator/.ATTRIBUTES/ITERATOR_STATE"
_STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"


def variables_by_path(variables, what):
  """{path: variable}; duplicate paths would silently share a checkpoint slot, so they fail."""
  named = {}
  for variable in variables:
    if variable.path in named:
      raise ValueError(f"two {what} variables share the path {variable.path!r}")
    named[variable.path] = variable
  return named


def model_state(model):
  return variables_by_path(model.weights, "model")


def optimizer_state(optimizer):
  return variables_by_path(optimizer.variables, "optimizer")


def latest_resume_point(checkpoint_dir):
  """(latest checkpoint prefix or None, its step (0 without one), whether it holds the tf.data
  iterator). The step is read from the checkpoint itself, never from its file name."""
  latest = tf.train.latest_checkpoint(checkpoint_dir)
  if latest is None:
    return None, 0, False
  # Not tf.train.load_checkpoint: it first asks whether the prefix is a folder, which ram:// (and
  # so the tests' stand-in for a bucket) answers yes for any prefix of existing files.
  reader = tf.compat.v1.train.NewCheckpointReader(latest)
  return latest, int(reader.get_tensor(_STEP_KEY)), reader.has_tensor(_ITERATOR_KEY)


def restore_model_weights(model, path):
  """Assigns `model` the weights of the checkpoint at `path` (a file prefix or a folder, whose
  latest checkpoint is used); every model variable must be in it. Returns the prefix read."""
  # A prefix is known by its index file (ram:// calls a prefix of existing files a folder).
  prefix = path if tf.io.gfile.exists(path + ".index") else tf.train.latest_checkpoint(path)
  if prefix is None:
    raise FileNotFoundError(f"no checkpoint in {path}")
  tf.train.Checkpoint(model=model_state(model)).read(prefix).expect_partial(
      ).assert_existing_objects_matched()
  logging.info("Restored the model weights from %s.", prefix)
  return prefix


def restore_model(model_config, checkpoint_dir):
  """The model of the latest checkpoint in `checkpoint_dir` (weights only; plain BN)."""
  if tf.train.latest_checkpoint(checkpoint_dir) is None:
    raise FlagError(f"--checkpoint_dir: no checkpoint in {checkpoint_dir}")
  model = build_model(dataclasses.replace(model_config, sync_batch_norm=False))
  restore_model_weights(model, checkpoint_dir)
  return model
