"""The numerics a run fixes before it builds a model: the global Keras dtype policy and the seeds.

Every mode (train, pretrain, eval, predict, export, benchmark, flops; the trainer for train, and so
benchmarks/hfgd_vs_sfpn.py) goes through `prepare_numerics`, so a recipe's --mixed_precision=auto
means the same compute dtype in all of them (a model is evaluated, exported and timed as it was
trained), and nothing else sets the policy. benchmarks/device_check.py calls it too, but with its
own --precision (bfloat16 by default) for every recipe it times.
"""

import contextlib
import dataclasses
import os
import random

import keras
import numpy as np
import tensorflow as tf
from absl import logging

# --mixed_precision (once resolved) -> Keras dtype policy.
POLICIES = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def resolve_mixed_precision(mixed_precision, strategy=None, distribution=None):
  """The compute dtype `--mixed_precision=auto` stands for on this machine; other values as given.

  A run on TPUs is known by its strategy or, in the modes that build none (predict, export), by
  its --distribution=tpu: they then compute as its training did.
  auto: bfloat16 on TPUs and on GPUs of compute capability 8.0 or more (A100, H100: as fast as
  float16, no loss scaling, the original's later choice there), float16 on older GPUs, float32
  ("none") on CPUs, where float16 runs several times slower than float32.
  """
  if mixed_precision != "auto":
    return mixed_precision
  gpus = tf.config.list_physical_devices("GPU")
  if isinstance(strategy, tf.distribute.TPUStrategy) or distribution == "tpu":
    resolved, reason = "bfloat16", "TPU"
  elif gpus:
    capability = min(tf.config.experimental.get_device_details(gpu).get(
        "compute_capability", (0, 0)) for gpu in gpus)
    resolved = "bfloat16" if capability >= (8, 0) else "float16"
    reason = f"GPU compute capability {capability[0]}.{capability[1]}"
  else:
    resolved, reason = "none", "no GPU or TPU"
  logging.info("--mixed_precision=auto: %s (%s).", resolved, reason)
  return resolved


def set_seeds(seed, deterministic):
  """Seeds Python, numpy, TF and Keras; with `deterministic`, also makes every op deterministic."""
  os.environ["PYTHONHASHSEED"] = str(seed)
  random.seed(seed)
  np.random.seed(seed)
  keras.utils.set_random_seed(seed)
  if deterministic:
    tf.config.experimental.enable_op_determinism()


def prepare_numerics(train, strategy=None):
  """Seeds (`train.seed`, `train.deterministic`) and sets the global dtype policy of
  `train.mixed_precision`, auto resolved for `strategy` and this machine's devices.

  Returns `train` (a TrainConfig) with the resolved precision, which the optimizer reads (float16:
  loss scaling). Must run before the model is built.
  """
  set_seeds(train.seed, train.deterministic)
  mixed_precision = resolve_mixed_precision(train.mixed_precision, strategy, train.distribution)
  keras.mixed_precision.set_global_policy(POLICIES[mixed_precision])
  return dataclasses.replace(train, mixed_precision=mixed_precision)


@contextlib.contextmanager
def float32_policy():
  """Keras' global dtype policy float32 within the block, the run's again after it: the LiteRT
  and ONNX exports build their folded copy of a model trained in mixed precision to compute in
  float32 (hfgd_tf/export_formats.py), what their CPU runtimes execute."""
  policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("float32")
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(policy)
