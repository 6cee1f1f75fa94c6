"""The model benchmark at toy size: both models timed interleaved in one process, ratios as
median [min-max] within range, FLOPs ratios from the graphs, achieved rates as a fraction of the
matmul peak, and the benchmark's own batch (not the recipe's) in the timed steps."""

import types

import numpy as np
import pytest

from hfgd_tf import benchmark
from hfgd_tf.config import AugmentConfig, EvalConfig, ModelConfig, TrainConfig

MODEL = ModelConfig(num_classes=5, backbone="resnet_test", encoder_filters=16, cae_car_filters=16,
                    decoder_filters=16, decoder_output_stride=2)


def _settings():
  return types.SimpleNamespace(
      model=MODEL, eval=EvalConfig(eval_height=33, eval_width=33),
      train=TrainConfig(batch_size=16, augment=AugmentConfig(crop_height=33, crop_width=33),
                        jit_compile="off"))


@pytest.mark.slow
def test_benchmark_interleaves_both_models_and_reports_ratios_beside_flops(monkeypatch):
  batches = []
  build = benchmark.build_subject

  def recording_build(name, config, train, batch_size, *args):
    batches.append(batch_size)
    return build(name, config, train, batch_size, *args)
  monkeypatch.setattr(benchmark, "build_subject", recording_build)
  report = benchmark.run_benchmark(_settings(), steps=1, rounds=3, batch_size=1, memory=False)
  assert batches == [1, 1]  # --benchmark_batch_size, not the recipe's 16
  for kind in ("train", "infer"):
    median, low, high = report[kind]["ratio"]
    assert 0 < low <= median <= high
    assert report[kind]["macs_ratio"] > 1  # OS=2 HFGD does more work than SFPN
  for fraction in report["infer"]["peak_fraction"].values():
    assert 0 < fraction[1] <= fraction[0] <= fraction[2]
  assert report["matmul_gflops"][0] > 0


def test_interleaved_times_alternate_the_models_round_by_round(monkeypatch):
  order = []

  def step(name):
    return lambda: order.append(name) or np.float32(0)
  subjects = [types.SimpleNamespace(name=name, train=step(f"{name}/train"),
                                    infer=step(f"{name}/infer")) for name in ("a", "b")]
  monkeypatch.setattr(benchmark, "matmul_peak", lambda: (step("matmul"), 1))
  times = benchmark.interleaved_times(subjects, steps=1, rounds=2)
  assert order[10:] == ["a/train", "b/train", "a/infer", "b/infer", "matmul"] * 2  # after warm-up
  assert all(len(values) == 2 for kind in times.values() for values in kind.values())


@pytest.mark.parametrize("crop", [33, 65])
def test_subject_counts_each_distinct_input_size_once(monkeypatch, crop):
  sizes = []
  count = benchmark.model_complexity

  def recording_count(model, height, width):
    sizes.append((height, width))
    return count(model, height, width)
  monkeypatch.setattr(benchmark, "model_complexity", recording_count)
  settings = _settings()
  train = TrainConfig(augment=AugmentConfig(crop_height=crop, crop_width=crop), jit_compile="off")
  subject = benchmark.build_subject("hfgd", settings.model, train, 1, (33, 33), False)
  assert sorted(sizes) == sorted({(33, 33), (crop, crop)})
  assert (subject.train_macs == subject.infer_macs) == (crop == 33)
