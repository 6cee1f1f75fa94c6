"""Multi-replica behaviour on two logical CPU devices (run in a subprocess: one strategy per
process): CAR class centres and synchronized BN statistics equal the single-device ones."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mirrored_results():
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tests", "mirrored_checks.py"), "car_centres",
       "sync_bn"], capture_output=True, text=True, env=env, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_car_centres_are_all_reduced_across_replicas(mirrored_results):
  centres = mirrored_results["car_centres"]
  assert len(centres["replicas"]) == 2
  for replica in centres["replicas"]:
    np.testing.assert_allclose(replica, centres["single"], rtol=1e-6, atol=1e-6)


def test_synchronized_batch_norm_matches_one_device(mirrored_results):
  stats = mirrored_results["sync_bn"]
  np.testing.assert_allclose(stats["synced"], stats["single"], rtol=1e-5, atol=1e-6)
  # The statistics moved away from their initial values (0 and 1), so the check has teeth.
  assert np.abs(np.array(stats["single"][0])).max() > 0.1
