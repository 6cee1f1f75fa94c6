"""The config values the flags give, each checked on its own (the field's `check` and `parse`), and
the checks of combinations; every error is a FlagError naming the flag at fault."""

import os

from hfgd_tf.config import FlagError
from hfgd_tf.flags.definitions import flag_fields, flag_name


def fail(flag, message):
  raise FlagError(f"--{flag}: {message}")


def values_from_flags(config_class, flag_values):
  """{field: value} of the flags of `config_class`, checked and parsed; unset flags whose default
  is the dataset's are left out."""
  values = {}
  for field in flag_fields(config_class):
    name = flag_name(field)
    value = flag_values[name].value
    if value is None and field.metadata.get("from_dataset"):
      continue
    check = field.metadata.get("check")
    if check and value is not None and not check[0](value):
      fail(name, f"{check[1]}, got {value}")
    if "parse" in field.metadata:
      try:
        value = field.metadata["parse"](value)
      except ValueError as error:
        fail(name, str(error))
    values[field.name] = value
  return values


def check_combinations(settings):
  """Values that cannot work together, or not in `settings.mode`."""
  train, augment, evaluation = settings.train, settings.train.augment, settings.eval
  if train.warmup_steps >= train.train_steps:
    fail("warmup_steps", f"{train.warmup_steps} must be < train_steps={train.train_steps}")
  if train.end_learning_rate > train.learning_rate:
    fail("end_learning_rate", f"{train.end_learning_rate} exceeds learning_rate "
         f"{train.learning_rate}")
  if not 0 < augment.min_scale <= augment.max_scale:
    fail("min_scale", f"need 0 < min_scale <= max_scale, got {augment.min_scale} and "
         f"{augment.max_scale}")
  if augment.crop_height > evaluation.eval_height or augment.crop_width > evaluation.eval_width:
    fail("crop_height", f"crop {augment.crop_height}x{augment.crop_width} is larger than the eval "
         f"size {evaluation.eval_height}x{evaluation.eval_width}; lower the crop or raise "
         "--eval_height/--eval_width")
  if train.deterministic and train.jit_compile == "on":
    fail("jit_compile", "on cannot be deterministic (XLA has no deterministic max-pool gradient); "
         "use --jit_compile=auto or off with --deterministic")
  if train.distribution == "tpu" and train.tpu is None:
    fail("tpu", "distribution=tpu needs --tpu (a TPU name or address, '' for a local TPU)")
  if train.tpu is not None and train.distribution != "tpu":
    fail("distribution", f"--tpu is set but distribution={train.distribution}; use "
         "--distribution=tpu")
  resolvers = {"multi_worker": ("tf_config", "slurm"), "tpu": ("tpu",)}
  if train.cluster_resolver not in resolvers.get(train.distribution, ()) + (None,):
    fail("cluster_resolver", f"{train.cluster_resolver} does not apply to distribution="
         f"{train.distribution} (multi_worker: tf_config or slurm; tpu: tpu)")
  if train.distribution == "multi_worker" and train.cluster_resolver == "slurm" and (
      "SLURM_PROCID" not in os.environ):
    fail("cluster_resolver", "slurm needs the SLURM_* variables of a job step: launch each "
         "worker with srun")
  if (train.distribution == "multi_worker" and train.cluster_resolver != "slurm"
      and "TF_CONFIG" not in os.environ):
    fail("distribution", "multi_worker needs the TF_CONFIG environment variable (cluster and "
         "task of this worker), or --cluster_resolver=slurm under srun")
  if train.pretrain_steps and train.backbone_weights not in (None, "none"):
    fail("pretrain_steps", "pretraining writes the backbone's weights, but "
         f"--backbone_weights={train.backbone_weights} gives them too; set one of the two")
  if (train.pretrain_steps and settings.mode == "train"
      and train.distribution in ("multi_worker", "tpu")):
    fail("pretrain_steps", f"pretraining runs on one machine, not with distribution="
         f"{train.distribution}: run --mode=pretrain first, then train with --backbone_weights")
  if settings.mode == "pretrain" and not train.pretrain_steps:
    fail("pretrain_steps", "mode=pretrain needs --pretrain_steps > 0")
