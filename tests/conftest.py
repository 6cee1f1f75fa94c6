"""Shared test setup: quiet TensorFlow, deterministic seeds, float32 policy restored after tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# XLA on the CPU without LLVM's optimisations: the tests ask whether a step compiles (tf2xla and
# XLA's own passes run as before; an op without an XLA kernel still fails) and what it computes,
# never how fast the CPU code runs. Compile tests took 9-23% less time, measured side by side.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import keras  # noqa: E402
import pytest  # noqa: E402

from tensorflow.python.framework import config as tf_config  # noqa: E402

from tests import tiny_backbones  # noqa: E402

tiny_backbones.register()


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end tests that take more than a few seconds")
  config.addinivalue_line(
      "markers", "matrix: every experiment flagfile in every mode (tests/test_experiments.py) "
      "beyond the few the other runs keep; tens of minutes")
  # Keras 3.15's save_weights converts variables with np.array(copy=False) semantics that numpy 2
  # deprecates; it is Keras' own call, once per variable.
  config.addinivalue_line(
      "filterwarnings",
      "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
  keras.utils.set_random_seed(0)
  yield
  keras.mixed_precision.set_global_policy("float32")
  # A deterministic-run test must not leave op determinism on for the rest of the session: XLA
  # compiles no deterministic max-pool gradient, so later compile tests would fail.
  tf_config.disable_op_determinism()
