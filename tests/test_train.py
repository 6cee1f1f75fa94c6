"""The trainer on a tiny copy of the built-in dataset with a tiny HFGD, on one CPU device: the loss
goes down, evaluation gives a finite mIoU, a resumed run ends with the same weights as an
uninterrupted one, and a NaN loss stops training keeping the last good checkpoint."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from datasets.builtin import ensure_builtin_dataset
from hfgd_tf import optimization
from hfgd_tf import training
from hfgd_tf.checkpoints import restore_model
from hfgd_tf.config import AugmentConfig, TrainConfig
from hfgd_tf.evaluation import PeriodicEval
from hfgd_tf.modeling.backbones.layer_decay import num_depths
from tests.tiny_runs import TINY_MODEL, tiny_train_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return ensure_builtin_dataset(str(tmp_path_factory.mktemp("builtin")), num_train=16, num_val=4)


def _trainer(config, validation=None):
  return training.Trainer(TINY_MODEL, config, tf.distribute.OneDeviceStrategy("/cpu:0"),
                          palette=[(i * 30, 0, 0) for i in range(7)], validation=validation)


def _weights(model):
  return [variable.numpy() for variable in model.weights]


@pytest.mark.slow
def test_loss_decreases_and_eval_gives_finite_miou(data_dir, tmp_path):
  validation = PeriodicEval(os.path.join(data_dir, "val-*.tfrecord"), 7, 129, 129,
                            batch_size=2)
  config = tiny_train_config(data_dir, tmp_path, train_steps=16, log_every=1, eval_every=8,
                         bn_recalibration_batches=2,
                         augment=AugmentConfig(crop_height=65, crop_width=65, min_scale=1.0,
                                               max_scale=1.0))
  trainer = _trainer(config, validation)
  losses = []
  original_log = trainer._log
  trainer._log = lambda step, loss, terms, rate: (losses.append(loss),
                                                  original_log(step, loss, terms, rate))
  results = trainer.train()
  assert results["step"] == 16 and len(losses) == 16
  assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:2]), losses
  assert 0.0 <= results["miou"] <= 1.0 and np.isfinite(results["miou"])
  # Checkpoints at 3, 6, ..., 15 and the last step; TensorBoard events with scalars and images.
  assert tf.train.latest_checkpoint(config.checkpoint_dir).endswith("ckpt-16")
  assert tf.io.gfile.glob(os.path.join(config.tensorboard_dir, "events.out.tfevents.*"))


@pytest.mark.slow
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(data_dir, tmp_path):
  tf.config.experimental.enable_op_determinism()
  uninterrupted = _trainer(tiny_train_config(data_dir, tmp_path / "a", deterministic=True))
  initial = _weights(uninterrupted.model)
  uninterrupted.train()

  # A run killed at step 5, after its checkpoint at step 3 ...
  killed = _trainer(tiny_train_config(data_dir, tmp_path / "b", deterministic=True))
  step_fn = killed._train_step

  def dies_at_step_five(iterator):
    if int(killed.step) == 4:
      raise KeyboardInterrupt("killed")
    return step_fn(iterator)
  killed._train_step = dies_at_step_five
  with pytest.raises(KeyboardInterrupt):
    killed.train()
  # ... is resumed by a fresh trainer at step 3 and trained to the end.
  resumed = _trainer(tiny_train_config(data_dir, tmp_path / "b", deterministic=True))
  assert int(resumed.step) == 3
  assert int(resumed.optimizer.iterations) == 3
  resumed.train()
  assert int(resumed.step) == 6
  for expected, actual in zip(_weights(uninterrupted.model), _weights(resumed.model)):
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
  # The weights did change in training, so the comparison has teeth.
  assert any(not np.allclose(a, b) for a, b in zip(initial, _weights(resumed.model)))


@pytest.mark.slow  # > 15 s on 2 cores; CI runs it
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
  config = tiny_train_config(data_dir, tmp_path, train_steps=8, checkpoint_every=2)
  trainer = _trainer(config)
  losses = training.segmentation_losses

  def nan_from_step_five(outputs, labels, model_config):
    total, terms = losses(outputs, labels, model_config)
    poison = tf.where(trainer.step >= 4, np.nan, 0.0)  # step holds the steps already done
    terms = dict(terms, ce=terms["ce"] + poison)
    return total + poison, terms
  monkeypatch.setattr(training, "segmentation_losses", nan_from_step_five)
  with pytest.raises(training.TrainingDivergedError, match=r"loss is nan at step 5 \(terms: ce="):
    trainer.train()
  assert tf.train.latest_checkpoint(config.checkpoint_dir).endswith("ckpt-4")
  restored = restore_model(TINY_MODEL, config.checkpoint_dir)
  assert all(np.isfinite(weights).all() for weights in _weights(restored))


def test_trainer_looks_up_the_latest_checkpoint_once(data_dir, tmp_path, monkeypatch):
  lookups = []
  lookup = training.latest_resume_point
  monkeypatch.setattr(training, "latest_resume_point",
                      lambda directory: (lookups.append(directory), lookup(directory))[1])
  config = tiny_train_config(data_dir, tmp_path, train_steps=2)
  _trainer(config)
  assert lookups == [config.checkpoint_dir]  # run_train passes its own: no lookup at all then


def test_sgd_adds_l2_on_kernels_of_its_scope_and_adamw_excludes_norms_and_biases(data_dir,
                                                                                 tmp_path):
  sgd = _trainer(tiny_train_config(data_dir, tmp_path / "sgd", optimizer="sgd", weight_decay=1e-4,
                                   weight_decay_scope="all"))
  names = {variable.name for variable in sgd._l2}
  assert names == {"kernel"} or names <= {"kernel", "depthwise_kernel"}
  assert len(sgd._l2) == sum(v.name.endswith("kernel") for v in sgd.model.trainable_variables)
  scoped = {scope: optimization.l2_variables(
      sgd.model, dataclasses.replace(sgd.train_config, weight_decay_scope=scope))
            for scope in ("head", "original")}
  backbone = {id(v) for v in sgd.model.backbone.weights}
  assert scoped["head"] and not any(id(v) in backbone for v in scoped["head"])
  # The tiny HFGD: its CAE's own convs and the class kernels, not CAR's convs nor the decoder's.
  assert {v.path for v in scoped["original"]} == {
      "hfgd/encoder/leading_conv1/conv/kernel", "hfgd/encoder/leading_conv2/conv/kernel",
      "hfgd/encoder/self_attention/query/kernel", "hfgd/encoder/self_attention/key/kernel",
      "hfgd/encoder/self_attention/value/kernel", "hfgd/class_kernels/kernel"}
  for off in (dict(weight_decay=0.0), dict(optimizer="adamw")):
    assert not optimization.l2_variables(sgd.model, dataclasses.replace(sgd.train_config, **off))

  excluded = optimization.no_weight_decay_variables(sgd.model)
  assert {v.name for v in excluded} == {"gamma", "beta", "moving_mean", "moving_variance",
                                        "bias"}
  adamw = optimization.build_optimizer(
      dataclasses.replace(sgd.train_config, optimizer="adamw"), sgd.model)
  kernel = next(v for v in sgd.model.trainable_variables if v.name == "kernel")
  gamma = next(v for v in sgd.model.trainable_variables if v.name == "gamma")
  assert adamw._use_weight_decay(kernel) and not adamw._use_weight_decay(gamma)


def test_schedule_is_poly_with_optional_warmup():
  config = TrainConfig(learning_rate=0.01, train_steps=100, poly_power=0.9)
  schedule = optimization.learning_rate_schedule(config)
  assert float(schedule(0)) == pytest.approx(0.01)
  assert float(schedule(50)) == pytest.approx(0.01 * 0.5 ** 0.9, rel=1e-5)
  assert float(schedule(100)) == pytest.approx(0.0)
  warm = optimization.learning_rate_schedule(dataclasses.replace(config, warmup_steps=10))
  assert float(warm(5)) == pytest.approx(0.005)
  assert float(warm(10)) == pytest.approx(0.01)
  assert float(warm(55)) == pytest.approx(0.01 * 0.5 ** 0.9, rel=1e-5)


@pytest.mark.parametrize("schedule, expected", [
    # step: lr, with W = 1500 of T = 30000 steps at lr 0.01 (docs/training.md).
    ("decay_to_end", {0: 0.0, 750: 0.005, 1499: 0.01 * 1499 / 1500, 1500: 0.01,
                      28499: 0.01 * (1501 / 28500) ** 0.9, 28500: 0.01 * (1500 / 28500) ** 0.9,
                      29000: 4.9054e-4, 30000: 0.0}),
    ("original", {0: 0.0, 750: 0.005, 1499: 0.01 * 1499 / 1500, 1500: 0.01,
                  28499: 0.01 * (1501 / 28500) ** 0.9, 28500: 7.0652e-4, 29000: 7.0652e-4,
                  30000: 7.0652e-4}),
])
def test_warmup_schedules_at_their_boundary_steps(schedule, expected):
  config = TrainConfig(learning_rate=0.01, train_steps=30000, poly_power=0.9, warmup_steps=1500,
                       warmup_schedule=schedule)
  lr = optimization.learning_rate_schedule(config)
  for step, value in expected.items():
    assert float(lr(step)) == pytest.approx(value, rel=1e-4, abs=1e-12), step


def test_layerwise_lr_decay_scales_backbone_updates(data_dir, tmp_path):
  config = tiny_train_config(data_dir, tmp_path, optimizer="sgd", layerwise_lr_decay=0.5,
                         momentum=0.0, weight_decay=0.0)
  trainer = _trainer(config)
  multipliers = dict(zip([v.path for v in trainer.model.trainable_variables],
                         trainer.optimizer._lr_multipliers))
  depths = num_depths(trainer.model.backbone)  # resnet_test: stem + 9 blocks + the head
  assert multipliers["stem_1_conv/kernel"] == pytest.approx(0.5 ** depths)
  assert multipliers["stage4_block3_3_conv/kernel"] == pytest.approx(0.5)
  assert multipliers["hfgd/class_kernels/kernel"] == 1.0
  variable = trainer.model.trainable_variables[0]
  before = variable.numpy()
  gradient = tf.ones_like(before)
  trainer.optimizer.apply_gradients([(gradient, variable)])
  np.testing.assert_allclose(before - variable.numpy(),
                             config.learning_rate * multipliers[variable.path], rtol=1e-2)


def test_eta_shows_days_beyond_24_hours():
  assert training.format_duration(36 * 3600) == "1d 12:00:00"
  assert training.format_duration(16 * 86400 + 61) == "16d 00:01:01"
  assert training.format_duration(3599.6) == "01:00:00"


def test_log_lines_at_each_multiple_show_the_mean_since_the_last(data_dir, tmp_path):
  trainer = _trainer(tiny_train_config(data_dir, tmp_path, train_steps=4, steps_per_loop=2,
                                       log_every=4, checkpoint_every=4))
  # Two loops of 2 steps whose summed losses are 2 x 1, then 2 x 3 (no step runs: only the
  # bookkeeping of train() is under test).
  sums = iter([2.0, 6.0])
  trainer._train_loop = lambda iterator, steps: (lambda loss: (loss, {"ce": loss}))(
      tf.constant(next(sums)))
  logged = []
  trainer._log = lambda step, loss, terms, rate: logged.append((step, loss, terms["ce"]))
  assert trainer.train()["last_loss"] == 3.0
  assert logged == [(4, 2.0, 2.0)]  # steps 1..4, not the last loop's 3.0


# float16 runs ~8x slower than float32 on CPUs (40 s here): CI runs it.
@pytest.mark.parametrize("precision", [pytest.param("float16", marks=pytest.mark.slow), "bfloat16"])
def test_mixed_precision_trains_and_resumes(data_dir, tmp_path, precision):
  config = tiny_train_config(data_dir, tmp_path, mixed_precision=precision, train_steps=2,
                         checkpoint_every=2)
  trainer = _trainer(config)
  assert trainer.model.backbone.layers[1].compute_dtype == precision
  results = trainer.train()
  assert np.isfinite(results["last_loss"])
  if precision == "float16":  # dynamic loss scaling, its scale saved and resumed
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    resumed = _trainer(dataclasses.replace(config, train_steps=3))
    assert int(resumed.step.numpy()) == 2
    assert np.isfinite(resumed.train()["last_loss"])


def _main(*arguments):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *arguments],
                        capture_output=True, text=True, env=env, timeout=600, check=False)


@pytest.mark.slow
def test_demo_flagfile_trains_evaluates_predicts_exports_and_eval_mode_restores(tmp_path):
  """The demo chain at toy size (backbone pretraining included); then --mode=eval on the
  checkpoint reproduces the final mIoU, and a longer run resumes without pretraining again."""
  common = [f"--flagfile={ROOT}/experiments/builtin/demo.cfg", f"--data_dir={tmp_path}/data",
            "--builtin_num_train=16", "--builtin_num_val=4", f"--model_dir={tmp_path}/run",
            "--encoder_filters=16", "--cae_car_filters=16", "--decoder_filters=16",
            "--pretrain_steps=2"]
  train_flags = ["--warmup_steps=1", "--crop_height=33", "--crop_width=33", "--batch_size=2",
                 "--log_every=1", "--eval_batch_size=2", "--bn_recalibration_batches=2"]
  result = _main(*common, *train_flags, "--train_steps=3")
  assert result.returncode == 0, result.stderr[-3000:]
  run = tmp_path / "run"
  pretrained = run / "pretrain" / "resnet_tiny.weights.h5"
  assert "Pretraining resnet_tiny on built-in shapes for 2 steps" in result.stderr
  assert f"backbone variables from {pretrained}" in result.stderr
  trained = json.loads((run / "eval_results.json").read_text())
  assert np.isfinite(trained["mean_iou"]) and trained["num_images"] == 4
  assert (run / "checkpoints" / "ckpt-3.index").exists()
  assert len(list((run / "predictions" / "colour").glob("*.png"))) == 4
  with Image.open(run / "demo.png") as picture:  # 4 rows of input | ground truth | prediction
    assert picture.size == (3 * 128 + 2 * 4, 4 * 128 + 3 * 4)
  assert (run / "export" / "1" / "saved_model.pb").exists()

  result = _main(*common, "--mode=eval", "--eval_batch_size=2")
  assert result.returncode == 0, result.stderr[-3000:]
  restored = json.loads((run / "eval_results.json").read_text())
  assert restored["confusion_matrix"] == trained["confusion_matrix"]

  # Resuming starts from the checkpoint: no pretraining, the backbone's weights left alone.
  written = pretrained.stat().st_mtime_ns
  result = _main(*common, *train_flags, "--train_steps=4", "--eval_after_train=false",
                 "--predict_after_train=false", "--export_after_train=false")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Pretraining" not in result.stderr and "Resum" in result.stderr
  assert (run / "checkpoints" / "ckpt-4.index").exists()
  assert pretrained.stat().st_mtime_ns == written
