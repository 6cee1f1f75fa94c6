"""The trainer under MirroredStrategy (two logical CPU devices) and a two-process
MultiWorkerMirroredStrategy on 127.0.0.1, each run in subprocesses (tests/train_checks.py); the
clusters --cluster_resolver=slurm reads from a job step's variables, and the flag's checks."""

import json
import os
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from datasets.builtin import ensure_builtin_dataset
from hfgd_tf.config import FlagError
from hfgd_tf.distribution import create_strategy, is_chief, slurm_cluster_resolver, worker_dir
from hfgd_tf.flags import checked_settings_from_flags, define_all_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = os.path.join(ROOT, "tests", "train_checks.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  # 64 examples give two shards: one per worker when files are sharded over two workers.
  return ensure_builtin_dataset(str(tmp_path_factory.mktemp("builtin")), num_train=64, num_val=4)


def _env(**extra):
  return dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", **extra)


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for sock in sockets:
    sock.bind(("127.0.0.1", 0))
  ports = [sock.getsockname()[1] for sock in sockets]
  for sock in sockets:
    sock.close()
  return ports


@pytest.mark.slow
def test_mirrored_two_replicas_match_one_device(data_dir, tmp_path):
  result = subprocess.run([sys.executable, CHECKS, "mirrored", data_dir, str(tmp_path)],
                          capture_output=True, text=True, env=_env(), timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(result.stdout.strip().splitlines()[-1])
  assert results["replicas"] == 2
  assert results["sync_batch_norm"] == [True, False]  # sync BN on 2 replicas only
  # Same weights, same global batch: the first loss agrees to float32 round-off (2.9e-6 measured
  # on the v3 built-in data: two half-batch sums against one); after an update the summation
  # order of the all-reduce shows up around 1e-5. A wrong replica average would be off by O(1).
  np.testing.assert_allclose(results["first_loss"][1], results["first_loss"][0], rtol=1e-5)
  np.testing.assert_allclose(results["loss"][1], results["loss"][0], rtol=1e-4)
  # Updates: the two runs' activations differ by float32 round-off, up to 7e-5 of their max, so
  # most variables' updates agree to 3e-5..9e-5 (the median on built-in data seeds 3-5). A
  # pre-activation that close to 0 crosses the ReLU kink on one run only: that pixel's gradient
  # flips and the variables behind it differ by up to 0.11 (3-13% of them). Real bugs move the
  # median: no / num_replicas gives 1.0, sync BN without its statistics' gradient 1.6-1.8 (max
  # 7-13), so the median carries the check and the max bounds the kinks.
  assert results["update_difference_median"] < 1e-3, results
  assert results["max_update_difference"][-1][0] < 0.5, results
  assert results["max_weight_change"] > 1e-3  # training moved the weights
  assert results["looped"][0] == 2 and np.isfinite(results["looped"][1])  # --steps_per_loop=2


@pytest.mark.slow
def test_multi_worker_two_processes_end_with_identical_weights(data_dir, tmp_path):
  ports = _free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
  workers = [subprocess.Popen(
      [sys.executable, CHECKS, "multi_worker", data_dir, str(tmp_path)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                   "index": index}})))
      for index in range(2)]
  outputs = []
  try:
    for worker in workers:
      stdout, stderr = worker.communicate(timeout=300)
      assert worker.returncode == 0, stderr[-3000:]
      outputs.append(json.loads(stdout.strip().splitlines()[-1]))
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
  assert [output["replicas"] for output in outputs] == [2, 2]
  assert [output["step"] for output in outputs] == [3, 3]
  assert outputs[0]["loss"] == pytest.approx(outputs[1]["loss"], rel=1e-6)
  chief, other = (np.load(tmp_path / f"worker-{index}.npz") for index in range(2))
  assert len(chief.files) == len(other.files) > 0
  for name in chief.files:
    np.testing.assert_array_equal(chief[name], other[name])
  # The chief (worker 0) wrote the checkpoints; the other worker only a scratch copy.
  assert (tmp_path / "checkpoints" / "ckpt-3.index").exists()
  assert (tmp_path / "checkpoints" / ".workers" / "worker-1").exists()


def _slurm_step(monkeypatch, tmp_path, rank, nodelist, tasks_per_node, gpus=None):
  """The variables srun sets for task `rank` of a job step; no nvidia-smi on PATH."""
  monkeypatch.setenv("PATH", str(tmp_path))
  for name in ("TF_CONFIG", "CUDA_VISIBLE_DEVICES"):
    monkeypatch.delenv(name, raising=False)
  if gpus is not None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpus)
  monkeypatch.setenv("SLURM_PROCID", str(rank))
  monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
  monkeypatch.setenv("SLURM_STEP_NODELIST", nodelist)
  monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", tasks_per_node)


def test_slurm_resolver_reads_a_two_node_job_step(monkeypatch, tmp_path):
  _slurm_step(monkeypatch, tmp_path, rank=1, nodelist="gpu[07-08]", tasks_per_node="1(x2)")
  resolver = slurm_cluster_resolver(port_base=9000)
  assert resolver.cluster_spec().as_dict() == {"worker": ["gpu07:9000", "gpu08:9000"]}
  assert (resolver.task_type, resolver.task_id) == ("worker", 1)
  assert "CUDA_VISIBLE_DEVICES" not in os.environ  # CPU nodes: no GPUs handed out


def test_slurm_resolver_shares_a_nodes_gpus_among_its_tasks(monkeypatch, tmp_path):
  _slurm_step(monkeypatch, tmp_path, rank=1, nodelist="localhost", tasks_per_node="2",
              gpus="0,1,2,3")
  resolver = slurm_cluster_resolver()
  assert resolver.cluster_spec().as_dict() == {"worker": ["localhost:8888", "localhost:8889"]}
  assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_slurm_resolver_outside_srun_and_a_resolver_of_another_strategy_are_errors(
    monkeypatch, tmp_path):
  _slurm_step(monkeypatch, tmp_path, rank=0, nodelist="localhost", tasks_per_node="2")
  monkeypatch.delenv("SLURM_STEP_NODELIST")
  with pytest.raises(ValueError, match="SLURM_STEP_NODELIST is not set"):
    slurm_cluster_resolver()
  with pytest.raises(ValueError, match="--cluster_resolver: slurm does not apply to distribution"
                     "=one_device"):
    create_strategy("one_device", cluster_resolver="slurm")


@pytest.mark.parametrize("arguments,error", [
    (["--distribution=multi_worker", "--cluster_resolver=slurm"],
     "--cluster_resolver: slurm needs the SLURM_"),
    (["--distribution=mirrored", "--cluster_resolver=tf_config"],
     "--cluster_resolver: tf_config does not apply to distribution=mirrored"),
    (["--distribution=tpu", "--tpu=local", "--cluster_resolver=slurm"],
     "--cluster_resolver: slurm does not apply to distribution=tpu"),
    (["--distribution=multi_worker"], "--distribution: multi_worker needs the TF_CONFIG")])
def test_cluster_resolver_flags_are_checked_before_anything_starts(monkeypatch, arguments, error):
  for name in ("TF_CONFIG", "SLURM_PROCID"):
    monkeypatch.delenv(name, raising=False)
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(["main.py", "--dataset=builtin", "--mode=export", *arguments])
  with pytest.raises(FlagError, match=error):
    checked_settings_from_flags(flag_values, mode="export")


class _PodHost(tf.distribute.TPUStrategy):
  """A TPUStrategy's resolver without a TPU: every host of a pod slice has one of task 0."""

  def __init__(self):  # pylint: disable=super-init-not-called  (no TPU to connect to)
    self._resolver = types.SimpleNamespace(task_type="worker", task_id=0)

  @property
  def cluster_resolver(self):
    return self._resolver


def test_only_host_0_of_a_tpu_pod_slice_is_chief(monkeypatch, tmp_path):
  monkeypatch.delenv("TPU_WORKER_ID", raising=False)
  assert is_chief(_PodHost())  # one host
  monkeypatch.setenv("TPU_WORKER_ID", "0")
  assert is_chief(_PodHost())
  monkeypatch.setenv("TPU_WORKER_ID", "3")
  assert not is_chief(_PodHost())
  assert worker_dir(_PodHost(), str(tmp_path)) == str(tmp_path / ".workers" / "worker-3")
