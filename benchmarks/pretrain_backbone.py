r"""Pretrains a backbone on built-in shapes: which shape is in this image?

  python3 -m benchmarks.pretrain_backbone [--backbone=resnet_tiny --steps=1000]
  python3 main.py --backbone_weights=runs/pretrain/resnet_tiny.weights.h5 ...
  python3 -m benchmarks.hfgd_vs_sfpn --backbone_weights=runs/pretrain/resnet_tiny.weights.h5

The paper's premise is a backbone pretrained on ImageNet; none can be downloaded here. This is the
same idea in miniature: 6-way classification (backbone -> global average pool of the OS=32
features -> softmax) of built-in images holding one object each, generated with another seed than
the segmentation data's (`--seed`, default 1), so the backbone learns shapes from image-level
labels of other images and never sees a mask. The backbone's weights are written as Keras
`.weights.h5`, the format `--backbone_weights` loads.
"""

import os
import time

import numpy as np
from absl import app, flags, logging

from hfgd_tf.quiet_import import import_tensorflow_quietly

tf = import_tensorflow_quietly()

# pylint: disable=wrong-import-position  (after the quiet TensorFlow import)
import keras

from datasets import builtin
from hfgd_tf import input_pipeline
from hfgd_tf.modeling.backbones import build_backbone

FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags; defined only when run as a script, so importing this module (the tests)
  leaves absl's global flags alone."""
  flags.DEFINE_string("backbone", "resnet_tiny", "Backbone to pretrain.")
  flags.DEFINE_integer("steps", 1000, "Training steps.")
  flags.DEFINE_integer("batch_size", 16, "Batch size.")
  flags.DEFINE_float("learning_rate", 2e-3, "AdamW peak learning rate (cosine).")
  flags.DEFINE_integer("seed", 1, "Built-in dataset seed (the segmentation data uses 0).")
  flags.DEFINE_integer("num_images", 2000, "Images to generate for pretraining.")
  flags.DEFINE_string("output", None,
                      "Weights file; default runs/pretrain/<backbone>.weights.h5.")


def shape_examples(seed, count):
  """(images uint8 [count, S, S, 3], classes int32 [count] in 0..K-2): one object per image."""
  images, classes = [], []
  for index in range(count):
    image, label = builtin.generate(seed, "train", index, num_objects=1)
    images.append(image)
    classes.append(int(label.max()) - 1)  # object classes 1..K-1 -> 0..K-2
  return np.stack(images), np.array(classes, np.int32)


def classifier(backbone, num_outputs):
  """images -> logits [N, num_outputs]: the backbone's OS=32 features, averaged, then a dense."""
  images = keras.Input((None, None, 3))
  pooled = keras.layers.GlobalAveragePooling2D()(backbone(images)[32])
  return keras.Model(images, keras.layers.Dense(num_outputs, name="shape")(pooled))


def pretrain(backbone_name, steps, num_images=2000, batch_size=16, learning_rate=2e-3, seed=1):
  """Trains `backbone_name` to name the shape of `num_images` generated images; returns it."""
  keras.utils.set_random_seed(seed)
  images, classes = shape_examples(seed, num_images)
  dataset = tf.data.Dataset.from_tensor_slices((images, classes)).shuffle(
      num_images, seed=seed).repeat().map(
          lambda image, label: (input_pipeline.normalize_image(
              tf.image.random_flip_left_right(image)), label)).batch(batch_size)
  backbone = build_backbone(backbone_name, bn_momentum=0.9, name="backbone")
  model = classifier(backbone, builtin.INFO.num_classes - 1)
  schedule = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=learning_rate,
                                                    warmup_steps=max(steps // 20, 1))
  model.compile(keras.optimizers.AdamW(schedule, weight_decay=0.01),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
  epochs = min(steps, 10)
  model.fit(dataset, steps_per_epoch=steps // epochs, epochs=epochs, verbose=0, shuffle=False,
            callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: (
                logging.info("epoch %d/%d: loss %.4f, shape accuracy %.3f", epoch + 1, epochs,
                             logs["loss"], logs["accuracy"])))])
  return backbone


def main(argv):
  del argv
  if FLAGS.steps < 1:
    raise app.UsageError(f"--steps must be >= 1, got {FLAGS.steps}")
  output = FLAGS.output or os.path.join("runs", "pretrain", f"{FLAGS.backbone}.weights.h5")
  if not output.endswith(".weights.h5"):
    raise app.UsageError(f"--output must end with .weights.h5, got {output}")
  start = time.time()
  backbone = pretrain(FLAGS.backbone, FLAGS.steps, FLAGS.num_images, FLAGS.batch_size,
                      FLAGS.learning_rate, FLAGS.seed)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  backbone.save_weights(output)
  logging.info("Pretrained %s for %d steps in %.0f s; weights written to %s.", FLAGS.backbone,
               FLAGS.steps, time.time() - start, output)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
