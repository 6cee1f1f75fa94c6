"""Backbone pretraining on built-in shapes: the paper's ImageNet stage in miniature.

HFGD assumes a pretrained backbone: its decoder reads the backbone's features under stop-gradient,
so from scratch the backbone learns only through the coarse OS=32 path. No ImageNet weights can be
downloaded on a fresh machine, so this trains the backbone to name the shape (disc, square,
triangle, ring, line, dot) of built-in images holding one object each: backbone -> global average
pool of the OS=32 features -> 6-way softmax. The images come from another seed than the
segmentation data's (the backbone never sees a mask or a validation image). The weights are written
as Keras `.weights.h5`, the format `--backbone_weights` loads.

  python main.py --mode=pretrain --pretrain_steps=1500 ...      # only write the weights
  python main.py --mode=train --pretrain_steps=1500 ...         # pretrain, then train from them
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from datasets import builtin
from hfgd_tf import atomic_files
from hfgd_tf.modeling.backbones import build_backbone
from hfgd_tf.ops import normalize_image

PRETRAIN_SEED = 1  # the segmentation data is generated with seed 0
NUM_IMAGES = 2000
BATCH_SIZE = 16
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 0.01
# Not the paper's 0.9997 (config.BN_MOMENTUM, for runs of tens of thousands of steps): after the
# demo's 1500 pretraining steps the moving statistics would still be 0.9997**1500 = 64% their
# initial values (mean 0, variance 1), so the backbone would be saved with statistics it never
# computed; at 0.9 they are forgotten within ~50 steps (0.9**50 < 1%).
PRETRAIN_BN_MOMENTUM = 0.9
# Bumped when the pretraining task or recipe changes, so older weights are not reused.
PRETRAIN_VERSION = 1
NUM_SHAPES = builtin.INFO.num_classes - 1  # every class but background


def weights_path(model_dir, backbone_name):
  """Where a run's pretrained backbone lives: <model_dir>/pretrain/<backbone>.weights.h5."""
  return os.path.join(model_dir, "pretrain", f"{backbone_name}.weights.h5")


def shape_examples(seed, count):
  """(images uint8 [count, S, S, 3], shapes int32 [count] in 0..5): one object per image."""
  images, shapes = [], []
  for index in range(count):
    image, label = builtin.generate(seed, "train", index, num_objects=1)
    images.append(image)
    shapes.append(int(label.max()) - 1)  # object classes 1..6 -> 0..5
  return np.stack(images), np.array(shapes, np.int32)


def classifier(backbone, num_outputs=NUM_SHAPES):
  """images -> logits [N, num_outputs]: the backbone's OS=32 features, averaged, then a dense."""
  images = keras.Input((None, None, 3))
  pooled = keras.layers.GlobalAveragePooling2D()(backbone(images)[32])
  logits = keras.layers.Dense(num_outputs, name="shape")(pooled)
  return keras.Model(images, keras.layers.Activation("linear", dtype="float32")(logits))


def _flip_each(images, seed, axis):
  """Flips each image of [N, H, W, C] along `axis` (1 or 2) with probability 1/2."""
  flip = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed) < 0.5
  return tf.where(flip, tf.reverse(images, [axis]), images)


def pretrain_backbone(backbone_name, steps, num_images=NUM_IMAGES, batch_size=BATCH_SIZE,
                      learning_rate=LEARNING_RATE, seed=PRETRAIN_SEED, log_every=None):
  """Trains `backbone_name` to name the shape of `num_images` generated images (fewer when the
  steps draw fewer); returns (backbone, training accuracy over the last `log_every` steps).

  AdamW with a cosine schedule (5% linear warm-up), random horizontal and vertical flips, batches
  drawn at random from the images held in memory: a plain loop, because Keras `fit` over tf.data
  took ~140 ms per step of resnet_tiny on 2 CPU cores where this loop takes ~110 (the bare step
  ~90). Runs in the global mixed-precision policy.
  """
  keras.utils.set_random_seed(seed)
  num_images = min(num_images, steps * batch_size)  # no more than the steps can draw
  images, shapes = shape_examples(seed, num_images)
  images, shapes = tf.constant(images), tf.constant(shapes)
  backbone = build_backbone(backbone_name, bn_momentum=PRETRAIN_BN_MOMENTUM, name="backbone")
  model = classifier(backbone)
  schedule = keras.optimizers.schedules.CosineDecay(
      0.0, steps, warmup_target=learning_rate, warmup_steps=max(steps // 20, 1))
  optimizer = keras.optimizers.AdamW(schedule, weight_decay=WEIGHT_DECAY)
  if keras.mixed_precision.global_policy().compute_dtype == "float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)

  @tf.function
  def train_step(step):
    step_seed = tf.stack([tf.cast(seed, tf.int64), step])
    index = tf.random.stateless_uniform([batch_size], step_seed, 0, num_images, tf.int32)
    batch = tf.gather(images, index)
    batch = _flip_each(_flip_each(batch, step_seed + 1, 2), step_seed + 2, 1)
    labels = tf.gather(shapes, index)
    with tf.GradientTape() as tape:
      logits = model(normalize_image(batch), training=True)
      loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
          labels, logits, from_logits=True))
      scaled = optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    correct = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), labels),
                                     tf.float32))
    return loss, correct

  log_every = log_every or max(steps // 10, 1)
  losses, correct = [], []
  accuracy = 0.0
  start = time.time()
  for step in range(steps):
    loss, right = train_step(tf.constant(step, tf.int64))
    losses.append(loss)
    correct.append(right)
    if (step + 1) % log_every == 0 or step + 1 == steps:
      accuracy = float(np.mean([float(c) for c in correct]))
      logging.info("pretrain step %d/%d: loss %.4f, shape accuracy %.3f, %.1f steps/s", step + 1,
                   steps, float(np.mean([float(x) for x in losses])), accuracy,
                   (step + 1) / (time.time() - start))
      losses, correct = [], []
  return backbone, accuracy


def _settings(backbone_name, steps):
  return {"version": PRETRAIN_VERSION, "backbone": backbone_name, "steps": steps,
          "precision": keras.mixed_precision.global_policy().name}


def ensure_pretrained_backbone(path, backbone_name, steps):
  """Pretrains `backbone_name` for `steps` steps and writes its weights to `path` (a
  `.weights.h5`), unless `path` already holds weights pretrained with the same settings (recorded
  beside it in `<path>.json`). Weights of other settings are an error, never overwritten.
  Returns `path`."""
  settings = _settings(backbone_name, steps)
  record = f"{path}.json"
  if tf.io.gfile.exists(path):
    existing = atomic_files.read_json(record) if tf.io.gfile.exists(record) else None
    if existing != settings:
      raise ValueError(f"{path} holds a backbone pretrained with {existing}, not {settings}; "
                       "remove it or use another --model_dir")
    logging.info("Pretrained backbone %s found in %s; not pretraining again.", backbone_name, path)
    return path
  logging.info("Pretraining %s on built-in shapes for %d steps.", backbone_name, steps)
  start = time.time()
  backbone, accuracy = pretrain_backbone(backbone_name, steps)
  # Keras writes a .weights.h5 on a remote filesystem through a local temporary file of its own;
  # the name must end in .weights.h5, so the temporary weights are <path>.incomplete.weights.h5.
  with atomic_files.atomic_path(path, ".incomplete.weights.h5") as partial:
    backbone.save_weights(partial)
    atomic_files.write_json(record, settings)
  logging.info("Pretrained %s in %.0f s (shape accuracy %.3f); weights in %s.", backbone_name,
               time.time() - start, accuracy, path)
  return path
