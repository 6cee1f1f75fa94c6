"""Stale batch-norm statistics after short runs: the warning, the safe momentum, the recalibration,
and the trainer's use of both (the recalibrated statistics are what the last checkpoint keeps)."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from datasets.builtin import ensure_builtin_dataset
from hfgd_tf import bn_statistics
from hfgd_tf import training
from hfgd_tf.checkpoints import restore_model_weights
from hfgd_tf.config import FlagError, TrainConfig
from hfgd_tf.modeling.model import build_model
from tests.tiny_runs import tiny_model, tiny_train_config


class _BatchNormOnly(keras.Model):
  """images -> BN(images): a model whose moving statistics are those of the data itself."""

  def __init__(self):
    super().__init__()
    self.norm = keras.layers.BatchNormalization(momentum=0.99)

  def call(self, inputs, training=None):
    return self.norm(inputs["image"], training=training)


def _batches(*means):
  rng = np.random.default_rng(0)
  return [(tf.constant(rng.normal(mean, 2.0, (4, 3, 3, 2)), tf.float32), tf.zeros([4, 3, 3]))
          for mean in means]


def test_safe_momentum_is_the_largest_that_forgets_enough():
  for steps in (50, 300, 1800, 30000):
    momentum = bn_statistics.safe_momentum(steps)
    assert bn_statistics.initial_share_left(momentum, steps) <= bn_statistics.STALE_FRACTION
    assert bn_statistics.initial_share_left(momentum + 0.001, steps) > bn_statistics.STALE_FRACTION
  assert bn_statistics.initial_share_left(0.99, 300) == pytest.approx(0.049, abs=1e-3)


def test_recalibration_averages_the_batch_statistics_and_restores_the_momentum():
  model = _BatchNormOnly()
  batches = _batches(1.0, 3.0)
  model({"image": batches[0][0]})
  assert bn_statistics.recalibrate(model, batches) == 2
  means = [tf.reduce_mean(batch, [0, 1, 2]) for batch, _ in batches]
  variances = [tf.math.reduce_variance(batch, [0, 1, 2]) for batch, _ in batches]
  np.testing.assert_allclose(model.norm.moving_mean.numpy(), np.mean(means, 0), rtol=1e-5)
  np.testing.assert_allclose(model.norm.moving_variance.numpy(), np.mean(variances, 0),
                             rtol=1e-5)
  assert model.norm.momentum == 0.99


def test_stale_statistics_warn_with_the_numbers_and_a_safe_momentum(caplog):
  model = _BatchNormOnly()
  model({"image": _batches(0.0)[0][0]})
  with caplog.at_level(logging.WARNING):
    left = bn_statistics.finish_training(model, 300)
  assert left == pytest.approx(0.99 ** 300)
  assert "momentum 0.99 over 300 steps leaves 0.049" in caplog.text
  assert f"--bn_momentum={bn_statistics.safe_momentum(300):g}" in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    assert bn_statistics.finish_training(model, 3000) < bn_statistics.STALE_FRACTION
  assert "stale" not in caplog.text


def test_a_model_without_batch_norm_is_left_alone(caplog):
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
  with caplog.at_level(logging.WARNING):
    assert bn_statistics.finish_training(model, 3) is None
  assert not caplog.text


TINY_MODEL = tiny_model(bn_momentum=0.99)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return ensure_builtin_dataset(str(tmp_path_factory.mktemp("builtin")), num_train=8, num_val=2)


def _train(data_dir, tmp_path, **overrides):
  config = tiny_train_config(data_dir, tmp_path, train_steps=3, learning_rate=1e-3,
                             shuffle_buffer=8, **overrides)
  trainer = training.Trainer(TINY_MODEL, config, tf.distribute.OneDeviceStrategy("/cpu:0"))
  trainer.train()
  return trainer


@pytest.mark.slow  # > 15 s on 2 cores; CI runs it
def test_trainer_recalibrates_before_its_last_checkpoint(data_dir, tmp_path):
  trainer = _train(data_dir, tmp_path, bn_recalibration_batches=2)
  stem = trainer.model.backbone.get_layer("stem_1_bn")
  # 3 updates at momentum 0.99 would leave the variance within 3% of its initial 1.0.
  assert np.abs(stem.moving_variance.numpy() - 1.0).max() > 0.1
  restored = build_model(TINY_MODEL)
  restore_model_weights(restored, str(tmp_path))
  np.testing.assert_array_equal(restored.backbone.get_layer("stem_1_bn").moving_variance.numpy(),
                                stem.moving_variance.numpy())


@pytest.mark.slow
def test_trainer_warns_about_stale_statistics(data_dir, tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    _train(data_dir, tmp_path)
  assert "momentum 0.99 over 3 steps" in caplog.text


def test_recalibration_needs_one_replica(data_dir, tmp_path):
  class TwoReplicas(tf.distribute.OneDeviceStrategy):
    num_replicas_in_sync = 2
  with pytest.raises(FlagError, match="--bn_recalibration_batches: needs one replica, not 2"):
    config = TrainConfig(data_dir=data_dir, checkpoint_dir=str(tmp_path), batch_size=2,
                         bn_recalibration_batches=1)
    training.Trainer(TINY_MODEL, config, TwoReplicas("/cpu:0"))
