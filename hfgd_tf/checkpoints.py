"""Checkpoint contents keyed by variable path, and restoring a model's weights from them.

`tf.train.Checkpoint(model=keras_model)` follows TF's object graph, which in Keras 3 does not reach
layers held in Python lists (e.g. CAE's leading convs): their trainable weights would only be saved
through the optimizer's variable list and their batch-norm statistics not at all. Checkpointing
{variable.path: variable} dicts instead saves every variable under a readable name, and lets a model
be restored without its optimizer (eval, predict, export).
"""

import tensorflow as tf
from absl import logging


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


def restore_model_weights(model, path):
  """Assigns `model` the weights of the checkpoint at `path` (a file prefix or a folder, whose
  latest checkpoint is used); every model variable must be in it. Returns the prefix read."""
  prefix = tf.train.latest_checkpoint(path) if tf.io.gfile.isdir(path) else path
  if prefix is None:
    raise FileNotFoundError(f"no checkpoint in {path}")
  tf.train.Checkpoint(model=model_state(model)).read(prefix).expect_partial(
      ).assert_existing_objects_matched()
  logging.info("Restored the model weights from %s.", prefix)
  return prefix
