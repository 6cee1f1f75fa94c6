"""Segmentation losses: cross-entropy with an ignore label, and the weighted total of a model's
outputs (main CE + CAE CE + auxiliary CE + CAR terms)."""

import tensorflow as tf


def cross_entropy(logits, labels, valid_only=False):
  """Per-pixel softmax cross-entropy [N, H, W, K] x [N, H, W], averaged.

  Labels outside 0..K-1 (the ignore label, 255) contribute 0. The original averaged over all
  pixels, ignored ones included (`valid_only=False`); `valid_only=True` averages over labelled
  pixels only. Computed in float32.
  """
  num_classes = tf.shape(logits)[-1]
  labels = tf.cast(labels, tf.int32)
  valid = tf.logical_and(labels >= 0, labels < num_classes)
  safe_labels = tf.where(valid, labels, 0)
  per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=safe_labels, logits=tf.cast(logits, tf.float32))
  valid = tf.cast(valid, tf.float32)
  total = tf.reduce_sum(per_pixel * valid)
  count = tf.reduce_sum(valid) if valid_only else tf.cast(tf.size(valid), tf.float32)
  return tf.math.divide_no_nan(total, count)


def segmentation_losses(outputs, labels, config):
  """Named, weighted loss terms of a training-mode model output, and their sum.

  Returns (total, terms) with terms among: ce (main logits), cae_ce (OS=32 path, weight
  `config.cae_loss_weight`), aux_ce (OCR, `config.aux_loss_weight`) and the model's own
  regularisation losses (car_intra, car_c2c, car_c2p, already weighted by their rates).
  """
  terms = {"ce": cross_entropy(outputs["logits"], labels, config.ce_average_valid_only)}
  weights = {"cae_logits": ("cae_ce", config.cae_loss_weight),
             "aux_logits": ("aux_ce", config.aux_loss_weight)}
  for output, (name, weight) in weights.items():
    if output in outputs:
      terms[name] = weight * cross_entropy(outputs[output], labels, config.ce_average_valid_only)
  terms.update(outputs.get("losses", {}))
  return tf.add_n(list(terms.values())), terms
