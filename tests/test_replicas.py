"""Right with more than one replica: XLA's train step, float16 loss scaling, DropPath masks,
periodic eval and rescaled (ADE20K) eval, each checked on two logical CPU devices
(tests/replica_checks.py, in one subprocess), and the train step's XLA rule for the strategies this
machine cannot start."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from datasets.builtin import ensure_builtin_dataset
from hfgd_tf import distribution
from hfgd_tf.config import FlagError
from tests.test_evaluation import VARIED_SIZES, write_varied_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = os.path.join(ROOT, "tests", "replica_checks.py")


@pytest.fixture(scope="module")
def replica_results(tmp_path_factory):
  """Every check of replica_checks.py in one process (~90 s of CPU: float16 is slow on CPUs)."""
  data_dir = ensure_builtin_dataset(str(tmp_path_factory.mktemp("builtin")), num_train=8,
                                    num_val=4)
  write_varied_records(os.path.join(data_dir, "varied-00000-of-00001.tfrecord"))
  names = ["jit_on_is_refused", "jit_auto_is_off", "float16_overflow_on_replica_1",
           "drop_path_masks", "periodic_eval_replicas", "rescaled_eval_on_two_replicas"]
  result = subprocess.run(
      [sys.executable, CHECKS, data_dir, str(tmp_path_factory.mktemp("work")), *names],
      capture_output=True, text=True, timeout=900, check=False,
      env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def _result(results, name):
  value = results[name]
  assert not (isinstance(value, dict) and "traceback" in value), value
  return value


@pytest.mark.slow  # one subprocess for all the checks below: ~90 s of CPU on 2 cores
def test_jit_compile_on_with_two_local_replicas_is_one_flag_error(replica_results):
  error = replica_results["jit_on_is_refused"].get("error", "")
  assert error.startswith("FlagError: --jit_compile: on cannot compile a train step with 2 "
                          "replicas on this worker"), replica_results["jit_on_is_refused"]


@pytest.mark.slow
def test_jit_compile_auto_is_off_with_two_local_replicas_and_trains(replica_results):
  result = _result(replica_results, "jit_auto_is_off")
  assert result["jit_compile"] is False and np.isfinite(result["loss"])


@pytest.mark.slow
def test_float16_overflow_on_one_replica_skips_the_step_everywhere(replica_results):
  result = _result(replica_results, "float16_overflow_on_replica_1")
  assert result["finite"] and result["trainable_unchanged"], result
  assert result["scale"] == [4.0, 2.0]  # lowered once


@pytest.mark.slow
def test_drop_path_draws_other_masks_on_each_replica(replica_results):
  steps = np.array(_result(replica_results, "drop_path_masks"))  # [step, replica, sample]
  assert steps.shape == (2, 2, 16) and set(np.unique(steps)) <= {0.0, 2.0}
  for replica_masks in steps:
    assert not np.array_equal(replica_masks[0], replica_masks[1])
  assert not np.array_equal(steps[0, 0], steps[1, 0])  # and new ones at every step


@pytest.mark.slow
def test_periodic_eval_and_image_samples_run_on_every_replica(replica_results):
  result = _result(replica_results, "periodic_eval_replicas")
  assert result["evaluate"] == [2] and result["sample"] == [2]
  assert 0.0 <= result["miou"] <= 1.0
  assert result["shapes"] == [[2, 129, 129], [2, 129, 129]]


@pytest.mark.slow
def test_rescaled_eval_on_two_replicas_counts_what_one_device_counts(replica_results):
  single, mirrored = (np.array(matrix) for matrix in _result(replica_results,
                                                               "rescaled_eval_on_two_replicas"))
  np.testing.assert_array_equal(mirrored, single)
  assert single.sum() == sum(height * width for height, width in VARIED_SIZES)


def _stand_in(worker_devices, num_replicas_in_sync):
  """A strategy's replica layout, for the ones this machine cannot start (GPU workers)."""
  return types.SimpleNamespace(extended=types.SimpleNamespace(worker_devices=worker_devices),
                               num_replicas_in_sync=num_replicas_in_sync)


@pytest.fixture
def gpu_machine(monkeypatch):
  """As on a GPU box: auto means XLA on, and TF lists a GPU."""
  monkeypatch.setattr(distribution, "use_jit_compile",
                      lambda jit_compile="auto", strategy=None: jit_compile != "off")
  listed = tf.config.list_logical_devices
  monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: (
      [tf.config.LogicalDevice("/device:GPU:0", "GPU")] if kind == "GPU" else listed(kind)))


def test_one_gpu_per_worker_keeps_xla_and_several_turn_auto_off(gpu_machine):
  del gpu_machine
  one_each = _stand_in(("/job:worker/replica:0/task:0/device:GPU:0",), 4)
  assert distribution.train_step_jit_compile("auto", one_each)
  assert distribution.train_step_jit_compile("on", one_each)
  assert not distribution.train_step_jit_compile("auto", one_each, deterministic=True)
  two_each = _stand_in(tuple(f"/job:worker/task:0/device:GPU:{i}" for i in range(2)), 8)
  assert not distribution.train_step_jit_compile("auto", two_each)
  with pytest.raises(FlagError, match="--jit_compile: on cannot compile a train step with 2 "
                     "replicas on this worker"):
    distribution.train_step_jit_compile("on", two_each)


def test_xla_on_for_cpu_workers_is_refused():
  one_cpu_each = _stand_in(("/job:worker/replica:0/task:0/device:CPU:0",), 2)
  with pytest.raises(FlagError, match="collectives on CPUs"):
    distribution.train_step_jit_compile("on", one_cpu_each)
  assert not distribution.train_step_jit_compile("auto", one_cpu_each)
