r"""Pretrains a backbone on built-in images: which shape classes does a crop contain?

  python3 -m benchmarks.pretrain_backbone [--backbone=resnet_tiny --steps=1500]
  python3 main.py --backbone_weights=runs/pretrain/resnet_tiny.weights.h5 ...
  python3 -m benchmarks.hfgd_vs_sfpn --backbone_weights=runs/pretrain/resnet_tiny.weights.h5

The paper's premise is a backbone pretrained on ImageNet; none can be downloaded here. This is the
same idea in miniature: multi-label classification (backbone -> global average pool of the OS=32
features -> one sigmoid per object class, binary cross-entropy) of training crops of a built-in
dataset generated with another seed than the segmentation data's (`--seed`, default 1), so the
backbone sees image-level labels of other images, never the masks it is later evaluated against.
The crops go through the demo's augmentation. The backbone's weights are written as Keras
`.weights.h5`, the format `--backbone_weights` loads.
"""

import os
import time

from absl import app, flags, logging

from hfgd_tf.quiet_import import import_tensorflow_quietly

tf = import_tensorflow_quietly()

# pylint: disable=wrong-import-position  (after the quiet TensorFlow import)
import keras

from datasets import builtin
from hfgd_tf import input_pipeline
from hfgd_tf.backbones import build_backbone
from hfgd_tf.config import AugmentConfig

FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags; defined only when run as a script, so importing this module (the tests)
  leaves absl's global flags alone."""
  flags.DEFINE_string("backbone", "resnet_tiny", "Backbone to pretrain.")
  flags.DEFINE_integer("steps", 1500, "Training steps.")
  flags.DEFINE_integer("batch_size", 16, "Batch size.")
  flags.DEFINE_float("learning_rate", 2e-3, "AdamW peak learning rate (cosine).")
  flags.DEFINE_integer("crop", 129, "Training crop size.")
  flags.DEFINE_integer("seed", 1, "Built-in dataset seed (the segmentation data uses 0).")
  flags.DEFINE_integer("num_images", 2000, "Images to generate for pretraining.")
  flags.DEFINE_string("data_dir", os.path.join("runs", "pretrain-data"),
                      "Where the pretraining images are generated.")
  flags.DEFINE_string("output", None,
                      "Weights file; default runs/pretrain/<backbone>.weights.h5.")


def presence_targets(labels, num_classes):
  """labels int32 [N, H, W] -> float32 [N, K-1]: 1 where object class k (1..K-1) occurs."""
  classes = tf.range(1, num_classes)
  present = tf.reduce_any(labels[..., None] == classes, axis=[1, 2])  # [N, H, W, K-1] -> [N, K-1]
  return tf.cast(present, tf.float32)


def classifier(backbone, num_outputs):
  """images -> logits [N, num_outputs]: the backbone's OS=32 features, averaged, then a dense."""
  images = keras.Input((None, None, 3))
  pooled = keras.layers.GlobalAveragePooling2D()(backbone(images)[32])
  return keras.Model(images, keras.layers.Dense(num_outputs, name="presence")(pooled))


def pretrain(backbone_name, data_dir, steps, batch_size=16, learning_rate=2e-3, crop=129,
             seed=1):
  """Trains `backbone_name` on the presence task over data_dir's train split; returns it."""
  keras.utils.set_random_seed(seed)
  num_classes = builtin.INFO.num_classes
  augment = AugmentConfig(crop_height=crop, crop_width=crop, min_scale=0.75, max_scale=1.25)
  dataset = input_pipeline.train_dataset(os.path.join(data_dir, "train-*.tfrecord"), batch_size,
                                         augment, seed=seed, shuffle_buffer=256)
  dataset = dataset.map(lambda images, labels: (images, presence_targets(labels, num_classes)))
  backbone = build_backbone(backbone_name, bn_momentum=0.9, name="backbone")
  model = classifier(backbone, num_classes - 1)
  schedule = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=learning_rate,
                                                    warmup_steps=max(steps // 20, 1))
  model.compile(keras.optimizers.AdamW(schedule, weight_decay=0.01),
                keras.losses.BinaryCrossentropy(from_logits=True),
                metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)])
  epochs = min(steps, 10)
  model.fit(dataset, steps_per_epoch=steps // epochs, epochs=epochs, verbose=0, shuffle=False,
            callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: (
                logging.info("epoch %d/%d: loss %.4f, presence accuracy %.3f", epoch + 1,
                             epochs, logs["loss"], logs["binary_accuracy"])))])
  return backbone


def main(argv):
  del argv
  if FLAGS.steps < 1:
    raise app.UsageError(f"--steps must be >= 1, got {FLAGS.steps}")
  output = FLAGS.output or os.path.join("runs", "pretrain", f"{FLAGS.backbone}.weights.h5")
  if not output.endswith(".weights.h5"):
    raise app.UsageError(f"--output must end with .weights.h5, got {output}")
  builtin.ensure_builtin_dataset(FLAGS.data_dir, seed=FLAGS.seed, num_train=FLAGS.num_images,
                                 num_val=1)
  start = time.time()
  backbone = pretrain(FLAGS.backbone, FLAGS.data_dir, FLAGS.steps, FLAGS.batch_size,
                      FLAGS.learning_rate, FLAGS.crop, FLAGS.seed)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  backbone.save_weights(output)
  logging.info("Pretrained %s for %d steps in %.0f s; weights written to %s.", FLAGS.backbone,
               FLAGS.steps, time.time() - start, output)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
