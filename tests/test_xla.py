"""Every train and eval step compiles under XLA (jit_compile=True) at toy size on CPU: HFGD OS=4
and OS=2, SA+CAR D8, every Table-1 encoder, each backbone family; single-scale, MS+flip and
sliding-window inference, which give the uncompiled logits. And --steps_per_loop: N steps in one
call end with the weights of N single calls, with every cadence kept."""

import numpy as np
import pytest
import tensorflow as tf

from datasets.builtin import ensure_builtin_dataset
from hfgd_tf import evaluation, inference
from hfgd_tf import training
from hfgd_tf.config import AugmentConfig, ModelConfig, TrainConfig
from hfgd_tf.data import pipeline
from hfgd_tf.distribution import use_jit_compile
from hfgd_tf.modeling.model import build_model

TINY = ModelConfig(num_classes=7, backbone="resnet_test", encoder_filters=16, cae_car_filters=16,
                   decoder_filters=16, bn_momentum=0.9)
SFPN = dict(decoder="sfpn", hfgm=False)
PROTOCOLS = {
    "single_scale": dict(scales=(1.0,), flip=False, window=None),
    "ms_flip": dict(scales=(0.75, 1.0), flip=True, window=None),
    "ms_flip_window": dict(scales=(0.75, 1.0), flip=True, window=(24, 20)),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return ensure_builtin_dataset(str(tmp_path_factory.mktemp("builtin")), num_train=8, num_val=2)


def _trainer(data_dir, tmp_path, model_config=TINY, **overrides):
  values = dict(data_dir=data_dir, checkpoint_dir=str(tmp_path / "ckpt"),
                tensorboard_dir=str(tmp_path / "tb"),
                augment=AugmentConfig(crop_height=33, crop_width=33, min_scale=1.0, max_scale=1.0),
                batch_size=2, train_steps=2, optimizer="sgd", learning_rate=1e-2,
                shuffle_buffer=8, seed=1, jit_compile="on", checkpoint_input_pipeline=False)
  values.update(overrides)
  config = TrainConfig(**values)
  return training.Trainer(model_config, config, tf.distribute.OneDeviceStrategy("/cpu:0"))


def _weights(model):
  return [variable.numpy() for variable in model.weights]


def _assert_step_compiles_and_trains(data_dir, tmp_path, model_config):
  trainer = _trainer(data_dir, tmp_path, model_config)
  images, labels = next(trainer.iterator)
  compiled = trainer._compiled_step.get_concrete_function(images, labels)
  assert compiled.function_def.attr["_XlaMustCompile"].b  # XLA or an error, never a fallback
  before = _weights(trainer.model)
  loss, terms = trainer._train_step(trainer.iterator)
  assert np.isfinite(float(loss)) and all(np.isfinite(float(v)) for v in terms.values())
  assert any(not np.array_equal(a, b) for a, b in zip(before, _weights(trainer.model)))


@pytest.mark.slow  # > 15 s on 2 cores; CI runs it
def test_hfgd_train_step_compiles(data_dir, tmp_path):
  _assert_step_compiles_and_trains(data_dir, tmp_path, TINY)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    dict(decoder_output_stride=2),
    dict(encoder="sa_car", decoder="none", hfgm=False, backbone_output_stride=8),
    *[dict(encoder=encoder, **SFPN) for encoder in ("identity", "aspp", "ocr", "sa", "sa_car",
                                                    "cae")],
    *[dict(backbone=backbone) for backbone in ("convnext_test", "convnext_v2_test", "swin_test")],
], ids=["hfgd_os2", "sa_car_d8", "sfpn_identity", "sfpn_aspp", "sfpn_ocr", "sfpn_sa",
        "sfpn_sa_car", "sfpn_cae", "convnext", "convnext_v2", "swin"])
def test_every_table_model_train_step_compiles(data_dir, tmp_path, overrides):
  config = ModelConfig(**{**TINY.to_dict(), **overrides})
  _assert_step_compiles_and_trains(data_dir, tmp_path, config)


@pytest.mark.parametrize("protocol", [
    "single_scale", pytest.param("ms_flip", marks=pytest.mark.slow), "ms_flip_window"])
def test_inference_compiles_and_gives_the_uncompiled_logits(protocol):
  model = build_model(TINY)
  images = tf.random.stateless_uniform([2, 29, 37, 3], [1, 2], -1.0, 1.0)

  def logits(x):
    return inference.multi_scale_logits(lambda y: model(y, training=False), x,
                                         **PROTOCOLS[protocol])
  compiled = tf.function(logits, jit_compile=True)
  expected = tf.function(logits)(images).numpy()
  np.testing.assert_allclose(compiled(images).numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_evaluate_with_jit_compile_counts_the_same_pixels(data_dir):
  model = build_model(TINY)
  dataset = pipeline.eval_dataset(f"{data_dir}/val-*.tfrecord", 2, 129, 129)
  results = [evaluation.evaluate(model, dataset, 7, jit_compile=jit, log_every=0,
                                 **PROTOCOLS["ms_flip_window"]) for jit in (False, True)]
  # Logits agree to ~1e-5, so at most a pixel or two on an argmax tie may differ.
  difference = np.abs(results[0].confusion_matrix - results[1].confusion_matrix).sum()
  assert results[1].confusion_matrix.sum() == results[0].confusion_matrix.sum() > 0
  assert difference <= 4


def test_jit_compile_auto_is_off_on_cpu_and_flags_win():
  assert not use_jit_compile("auto")  # this machine has CPUs only
  assert use_jit_compile("on") and not use_jit_compile("off")


@pytest.mark.slow  # > 15 s on 2 cores; CI runs it
def test_steps_per_loop_gives_the_weights_of_single_steps_and_keeps_cadences(data_dir, tmp_path):
  tf.config.experimental.enable_op_determinism()
  common = dict(train_steps=6, log_every=3, checkpoint_every=4, deterministic=True,
                jit_compile="off", optimizer="adamw", learning_rate=3e-3)
  single = _trainer(data_dir, tmp_path / "single", **common)
  initial = _weights(single.model)
  single.train()
  looped = _trainer(data_dir, tmp_path / "looped", steps_per_loop=4, **common)
  calls, logged = [], []
  loop, log = looped._train_loop, looped._log
  looped._train_loop = lambda iterator, steps: (calls.append(int(steps)), loop(iterator, steps))[1]
  looped._log = lambda step, *args: (logged.append(step), log(step, *args))
  looped.train()
  # Loops end where something happens: the log at 3, the checkpoint at 4, the end at 6.
  assert calls == [3, 2] and logged == [3, 6]
  assert [int(path.rsplit("-", 1)[1]) for path in looped.manager.checkpoints] == [4, 6]
  for expected, actual in zip(_weights(single.model), _weights(looped.model)):
    np.testing.assert_array_equal(actual, expected)
  assert any(not np.allclose(a, b) for a, b in zip(initial, _weights(looped.model)))
