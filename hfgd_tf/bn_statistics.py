"""Batch-norm moving statistics after short runs: detect when they are stale, and recalibrate them.

Keras updates a moving statistic as m <- momentum * m + (1 - momentum) * batch_value, so after T
steps a fraction momentum ** T of its initial value (mean 0, variance 1) is left. At the original's
momentum 0.9997 that is 0.0001 after 30k steps, but 0.91 after 300 steps, and 0.99 ** 300 = 0.05:
enough, in channels whose true variance is ~0.01, to shrink every activation at inference and turn
a model that is right in training mode into one that predicts background everywhere.

`finish_training` is the trainer's one call, after the last step: with `recalibration_batches` it
replaces the moving statistics by the average batch statistics of that many training batches;
otherwise it warns, with the numbers and a momentum that would have been safe, when they are stale.
"""

import itertools
import math

import keras
from absl import logging

# The share of the initial statistics a run may leave before its moving statistics count as stale.
STALE_FRACTION = 1e-3


def batch_norm_layers(model):
  """Every BatchNormalization layer of `model`, nested models included."""
  return [layer for layer in model._flatten_layers()  # pylint: disable=protected-access
          if isinstance(layer, keras.layers.BatchNormalization)]


def initial_share_left(momentum, steps):
  """The fraction of the initial moving statistics left after `steps` updates."""
  return momentum ** steps


def safe_momentum(steps, stale_fraction=STALE_FRACTION):
  """The largest momentum (rounded down to 3 decimals) leaving <= stale_fraction after `steps`."""
  return math.floor(stale_fraction ** (1.0 / max(steps, 1)) * 1000) / 1000


def recalibrate(model, batches):
  """Sets every BN layer's moving mean and variance to the average of its training-mode batch
  statistics over `batches` (an iterable of (images, labels)); weights are not changed.

  Runs eagerly with each layer's momentum set to i / (i + 1) for batch i, which turns the moving
  update into a running average; the momenta are restored afterwards. Returns the batch count.
  """
  layers = batch_norm_layers(model)
  momenta = [layer.momentum for layer in layers]
  count = 0
  try:
    for images, labels in batches:
      for layer in layers:
        layer.momentum = count / (count + 1)
      model({"image": images, "label": labels}, training=True)
      count += 1
  finally:
    for layer, momentum in zip(layers, momenta):
      layer.momentum = momentum
  return count


def finish_training(model, train_steps, recalibration_batches=0, batches=None):
  """After the last step: recalibrate the BN statistics on `recalibration_batches` of `batches`
  (a callable returning an iterable of (images, labels)), or warn when they are stale.

  Returns the share of the initial statistics left (0.0 after a recalibration, None without BN).
  """
  layers = batch_norm_layers(model)
  if not layers:
    return None
  if recalibration_batches:
    count = recalibrate(model, itertools.islice(batches(), recalibration_batches))
    logging.info("Recalibrated the moving statistics of %d batch-norm layers on %d training "
                 "batches.", len(layers), count)
    return 0.0
  momentum = max(layer.momentum for layer in layers)
  left = initial_share_left(momentum, train_steps)
  if left > STALE_FRACTION:
    logging.warning(
        "Batch-norm moving statistics are stale: momentum %g over %d steps leaves %.3g of their "
        "initial values (more than %g), so inference-mode results (eval, predictions, export) can "
        "be far worse than training-mode ones. Use --bn_momentum=%g or lower, or "
        "--bn_recalibration_batches=50 to recompute them after training.", momentum, train_steps,
        left, STALE_FRACTION, safe_momentum(train_steps))
  return left

