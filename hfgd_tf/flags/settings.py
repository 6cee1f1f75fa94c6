"""RunSettings from the flags: each config filled from its fields' flags, the dataset's sizes and
the run's folders where the flags leave them unset, then checked."""

import os

from absl import flags

from datasets import get_dataset_info

from hfgd_tf.config import (BUILTIN_DATA_DIR, AugmentConfig, EvalConfig, FlagError, ModelConfig,
                            RunSettings, TrainConfig)
from hfgd_tf.flags.data_dirs import check_inputs
from hfgd_tf.flags.values import check_combinations, values_from_flags


def settings_from_flags(flag_values=flags.FLAGS, mode="train"):
  """RunSettings of `mode` from the flags, every value and combination checked (FlagError naming
  the flag); reads no file."""
  dataset_info = get_dataset_info(flag_values.dataset)
  augment = AugmentConfig(**{"crop_height": dataset_info.crop_size[0],
                             "crop_width": dataset_info.crop_size[1],
                             **values_from_flags(AugmentConfig, flag_values)},
                          ignore_label=dataset_info.ignore_label)
  train = TrainConfig(augment=augment, **values_from_flags(TrainConfig, flag_values))
  evaluation = EvalConfig(**{"eval_height": dataset_info.eval_size[0],
                             "eval_width": dataset_info.eval_size[1],
                             **values_from_flags(EvalConfig, flag_values)})
  model_values = values_from_flags(ModelConfig, flag_values)
  try:
    model = ModelConfig(num_classes=dataset_info.num_classes,
                        ignore_label=dataset_info.ignore_label, **model_values).validate()
  except ValueError as error:
    raise FlagError(f"model flags: {error}") from error
  run = dict(values_from_flags(RunSettings, flag_values), mode=mode)

  if train.data_dir is None and train.dataset == "builtin":
    train.data_dir = BUILTIN_DATA_DIR
  if train.model_dir is None:
    train.model_dir = train.checkpoint_dir or os.path.join(
        "runs", run["experiment_name"] or train.dataset.replace(":", "_").replace("/", "_"))
  train.checkpoint_dir = train.checkpoint_dir or os.path.join(train.model_dir, "checkpoints")
  train.tensorboard_dir = train.tensorboard_dir or os.path.join(train.checkpoint_dir, "tb")
  run["export_dir"] = run["export_dir"] or os.path.join(train.model_dir, "export")
  run["predict_output_dir"] = (run["predict_output_dir"]
                               or os.path.join(train.model_dir, "predictions"))
  settings = RunSettings(model=model, train=train, eval=evaluation, dataset_info=dataset_info,
                         **run)
  check_combinations(settings)
  return settings


def checked_settings_from_flags(flag_values=flags.FLAGS, mode="train"):
  """`settings_from_flags`, and the data and weights the mode reads checked to be there."""
  settings = settings_from_flags(flag_values, mode)
  check_inputs(settings)
  return settings
