"""The tiny HFGD and training config that trainer tests share: resnet_test, 16-wide heads, 33x33
crops, batch 2, AdamW, every cadence at 3 steps; each test overrides what it is about."""

import dataclasses

from hfgd_tf.config import AugmentConfig, ModelConfig, TrainConfig

TINY_MODEL = ModelConfig(num_classes=7, backbone="resnet_test", encoder_filters=16,
                         cae_car_filters=16, decoder_filters=16, bn_momentum=0.9)


def tiny_model(**overrides):
  return dataclasses.replace(TINY_MODEL, **overrides)


def tiny_train_config(data_dir, checkpoint_dir, **overrides):
  """A short CPU run on `data_dir` writing to `checkpoint_dir` (a pathlib.Path)."""
  values = dict(data_dir=data_dir, checkpoint_dir=str(checkpoint_dir),
                tensorboard_dir=str(checkpoint_dir / "tb"),
                augment=AugmentConfig(crop_height=33, crop_width=33), batch_size=2,
                train_steps=6, optimizer="adamw", learning_rate=3e-3,
                checkpoint_every=3, log_every=3, image_summary_every=3, shuffle_buffer=16,
                seed=1)
  values.update(overrides)
  return TrainConfig(**values)
