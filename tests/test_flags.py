"""Flags: every flagfile under experiments/ parses into valid configs; bad values fail early with
one message naming the flag (or path) at fault."""

import dataclasses
import glob
import os
import subprocess
import sys

import pytest
from absl import flags

from hfgd_tf import config
from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.flags import checked_settings_from_flags, define_all_flags
from hfgd_tf.flags.definitions import CONFIGS, flag_fields, flag_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "experiments", "**", "*.cfg"), recursive=True))


def _settings(*arguments, mode=None):
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(expand_flagfiles(["main.py", *arguments]))
  return checked_settings_from_flags(flag_values, mode or flag_values.mode)


# Every flag of the hand-written flags.py this package replaced, by absl type: none may disappear
# or change type (their defaults are the dataclasses', checked below). One was replaced on purpose:
# weight_decay_head_only (bool) by weight_decay_scope (head is its True).
FLAGS_BY_TYPE = {
    "float": "adamw_weight_decay aux_loss_weight bn_momentum cae_loss_weight car_c2c_threshold "
             "car_c2p_threshold car_inter_loss_rate car_intra_loss_rate drop_path_rate "
             "end_learning_rate head_bn_epsilon layerwise_lr_decay learning_rate max_scale "
             "min_scale momentum poly_power scale_step weight_decay",
    "bool": "align_corners allow_partial_weights benchmark_memory car_c2c_loss car_c2p_loss "
            "car_intra_loss ce_average_valid_only checkpoint_input_pipeline deterministic "
            "eval_after_train export_after_train export_overwrite flip hfgm hfgm_axial_attention "
            "photometric_distortion predict_after_train random_brightness random_flip "
            "validate_labels",
    "int": "axial_attention_heads backbone_output_stride batch_size benchmark_batch_size "
           "benchmark_rounds benchmark_steps bn_recalibration_batches builtin_num_train "
           "builtin_num_val cae_car_filters cae_kernel_size checkpoint_every crop_height "
           "crop_width decoder_filters decoder_output_stride encoder_filters eval_batch_size "
           "eval_every eval_height eval_width export_height export_version export_width "
           "flops_height flops_width image_summary_every log_every max_checkpoints_to_keep "
           "max_eval_examples pretrain_steps seed shuffle_buffer steps_per_loop train_steps "
           "warmup_steps",
    "string": "backbone backbone_weights checkpoint_dir data_dir dataset eval_split "
              "experiment_name export_dir model_dir predict_input predict_output_dir "
              "sliding_window tensorboard_dir tpu train_split",
    "string enum": "decoder distribution encoder export_format export_input jit_compile "
                   "mixed_precision mode optimizer warmup_schedule weight_decay_scope",
    "comma separated list of strings": "export_tflite_types flops_backbones scales",
}


def _defined_flags():
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  return flag_values


def test_every_flag_keeps_its_name_and_type():
  flag_values = _defined_flags()
  for kind, names in FLAGS_BY_TYPE.items():
    for name in names.split():
      assert name in flag_values, name
      assert flag_values[name].flag_type() == kind, name


def test_each_flag_defaults_to_its_config_field():
  flag_values = _defined_flags()
  for config_class in CONFIGS:
    for field in flag_fields(config_class):
      default = flag_values[flag_name(field)].default
      if field.metadata.get("from_dataset"):
        assert default is None, field.name  # unset: the dataset's size
      elif isinstance(field.default, tuple):
        assert default == [str(value) for value in field.default], field.name
      else:
        assert default == field.default, field.name


def test_every_config_field_is_a_flag_or_filled_otherwise():
  flag_values = _defined_flags()
  filled = {"ModelConfig": {"num_classes", "ignore_label", "sync_batch_norm"},
            "AugmentConfig": {"ignore_label"}, "TrainConfig": {"augment"},
            "RunSettings": {"model", "train", "eval", "dataset_info"}}
  for config_class in CONFIGS:
    names = {field.name for field in dataclasses.fields(config_class)}
    flagged = {field.name for field in flag_fields(config_class)}
    assert names - flagged == filled.get(config_class.__name__, set()), config_class
    assert all(flag_name(field) in flag_values for field in flag_fields(config_class))
  jit_compile = {config_class: next(field for field in dataclasses.fields(config_class)
                                    if field.name == "jit_compile")
                 for config_class in (config.EvalConfig, config.TrainConfig)}
  assert jit_compile[config.EvalConfig].metadata["shared"]
  assert jit_compile[config.EvalConfig].default == jit_compile[config.TrainConfig].default


def test_the_flags_not_named_as_their_field_are_those_config_py_names():
  renamed = {f"{config_class.__name__}.{field.name}": flag_name(field)
             for config_class in CONFIGS for field in flag_fields(config_class)
             if flag_name(field) != field.name}
  assert renamed == {"AugmentConfig.flip": "random_flip",
                     "EvalConfig.batch_size": "eval_batch_size",
                     "EvalConfig.max_examples": "max_eval_examples",
                     "EvalConfig.rescale": "eval_rescale"}
  documented = " ".join(config.__doc__.split())
  assert all(f"{field} is --{name}" in documented for field, name in renamed.items())


def test_encoder_and_decoder_values_are_the_registered_ones():
  # pylint: disable=import-outside-toplevel
  from hfgd_tf.modeling.decoders import DECODERS, NO_DECODER
  from hfgd_tf.modeling.encoders import ENCODERS
  assert config.ENCODERS == tuple(ENCODERS.names())
  assert config.DECODERS == (NO_DECODER, *DECODERS.names())


def test_there_are_flagfiles():
  names = {os.path.relpath(path, ROOT) for path in FLAGFILES}
  assert {"experiments/builtin/demo.cfg", "experiments/common/train_sgd_ablation.cfg",
          "experiments/common/train_adamw_sota.cfg", "experiments/common/eval_ss.cfg",
          "experiments/common/eval_mf.cfg"} <= names


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda path: os.path.relpath(path, ROOT))
def test_every_flagfile_parses_into_valid_configs(path):
  # flops needs no data, so the dataset folders the flagfiles name need not exist here.
  settings = _settings(f"--flagfile={path}", mode="flops")
  assert settings.model.num_classes == settings.dataset_info.num_classes
  assert settings.train.augment.crop_height <= settings.eval.eval_height


def test_sgd_ablation_base_is_the_papers_recipe():
  settings = _settings(f"--flagfile={ROOT}/experiments/common/train_sgd_ablation.cfg")
  train = settings.train
  assert (train.optimizer, train.learning_rate, train.momentum, train.weight_decay,
          train.batch_size, train.poly_power) == ("sgd", 0.01, 0.9, 1e-4, 16, 0.9)
  assert train.augment.random_brightness and not train.augment.photometric_distortion
  assert settings.model.bn_momentum == 0.9997


def test_adamw_base_and_multi_scale_eval():
  settings = _settings(f"--flagfile={ROOT}/experiments/common/train_adamw_sota.cfg",
                       f"--flagfile={ROOT}/experiments/common/eval_mf.cfg")
  assert (settings.train.optimizer, settings.train.learning_rate,
          settings.train.adamw_weight_decay) == ("adamw", 4e-5, 0.05)
  assert settings.train.augment.photometric_distortion
  assert settings.eval.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and settings.eval.flip


def test_dataset_gives_classes_and_sizes():
  settings = _settings("--dataset=cityscapes", "--mode=flops")
  assert settings.model.num_classes == 19
  assert (settings.train.augment.crop_height, settings.train.augment.crop_width) == (513, 1025)
  assert (settings.eval.eval_height, settings.eval.eval_width) == (1025, 2049)


@pytest.mark.parametrize("arguments, message", [
    (["--crop_height=200"], "--crop_height: crop 200x129 is larger than the eval size"),
    (["--dataset=pascal_context", "--data_dir=/nonexistent"], "--data_dir: /nonexistent is not"),
    (["--dataset=pascal_context"], "--data_dir: required for dataset=pascal_context"),
    (["--warmup_steps=10", "--train_steps=10"], "--warmup_steps: 10 must be < train_steps=10"),
    (["--batch_size=0"], "--batch_size: must be > 0"),
    (["--scales=1,x"], "--scales: expected comma-separated numbers"),
    (["--sliding_window=513"], "--sliding_window: expected 'height,width'"),
    (["--distribution=tpu"], "--tpu: distribution=tpu needs --tpu"),
    (["--backbone_weights=/nonexistent.h5"], "--backbone_weights: /nonexistent.h5 does not exist"),
    (["--hfgm=true", "--decoder=none"], "hfgm=True needs an upsampling decoder"),
    (["--deterministic", "--jit_compile=on"], "--jit_compile: on cannot be deterministic"),
    (["--pretrain_steps=-1"], "--pretrain_steps: must be >= 0, got -1"),
    (["--export_tflite_types=float32,int4"], "--export_tflite_types: expected some of "
                                              "float32,float16,int8"),
    (["--export_version=0"], "--export_version: must be > 0"),
    (["--pretrain_steps=5", f"--backbone_weights={os.path.abspath(__file__)}"],
     "--pretrain_steps: pretraining writes the backbone's weights, but --backbone_weights="),
    (["--mode=pretrain"], "--pretrain_steps: mode=pretrain needs --pretrain_steps > 0"),
    (["--pretrain_steps=5", "--distribution=tpu", "--tpu=local"],
     "--pretrain_steps: pretraining runs on one machine, not with distribution=tpu"),
])
def test_inconsistent_values_name_the_flag(arguments, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("*", r"\*")):
    _settings(*arguments)


def _main(*arguments):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *arguments],
                        capture_output=True, text=True, env=env, timeout=120, check=False)


def test_main_rejects_unknown_enum_value_listing_the_allowed_ones():
  result = _main("--optimizer=adam")
  assert result.returncode != 0
  assert "--optimizer=adam" in result.stderr and "sgd|adamw" in result.stderr
  assert "Traceback" not in result.stderr


def test_main_checks_the_flags_before_importing_tensorflow():
  code = ("import atexit, sys; atexit.register(lambda: print('tensorflow' in sys.modules)); "
          "sys.argv = ['main.py', '--batch_size=0']; import main; main.run()")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=120, check=False)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == "error: --batch_size: must be > 0, got 0"
  assert result.stdout.strip() == "False"


def test_local_flagfiles_are_read_without_tensorflow():
  experiment = f"{ROOT}/experiments/cityscapes/hfgd-os4_r50_bs16-30k_cityscapes-513x1025.cfg"
  code = ("import sys; from hfgd_tf.flagfiles import expand_flagfiles; "
          f"argv = expand_flagfiles(['main.py', '--flagfile={experiment}']); "
          "print('--dataset=cityscapes' in argv, 'tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=120, check=False)
  assert result.stdout.split() == ["True", "False"], result.stderr[-2000:]


def test_main_reports_a_missing_data_dir_in_one_line():
  result = _main("--dataset=coco_stuff", "--data_dir=/nonexistent")
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --data_dir: /nonexistent is not a folder")


def test_main_reports_a_missing_flagfile():
  result = _main("--flagfile=/nonexistent.cfg")
  assert result.returncode != 0 and "/nonexistent.cfg does not exist" in result.stderr


def test_main_eval_without_a_checkpoint_names_the_folder(tmp_path):
  result = _main("--mode=eval", f"--model_dir={tmp_path}", f"--data_dir={tmp_path}/data",
                 "--builtin_num_train=16", "--builtin_num_val=4")
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: --checkpoint_dir: no checkpoint in {tmp_path}/checkpoints")


def test_command_line_flags_win_over_flagfile_values_whatever_their_order():
  demo = f"--flagfile={ROOT}/experiments/builtin/demo.cfg"  # says --mode=train, --train_steps=...
  for arguments in (["--mode=flops", "--train_steps=77", demo],
                    [demo, "--mode=flops", "--train_steps=77"]):
    settings = _settings(*arguments)
    assert settings.mode == "flops" and settings.train.train_steps == 77


def test_each_experiment_gets_its_own_run_folder():
  first, second = (f"{ROOT}/experiments/pascal_context/{name}_r50_bs16-30k_pascal-context-59-513"
                   ".cfg" for name in ("hfgd-os4", "sfpn"))
  folders = {_settings(f"--flagfile={path}", f"--flagfile={ROOT}/experiments/common/eval_mf.cfg",
                       mode="flops").train.model_dir for path in (first, second)}
  assert folders == {os.path.join("runs", "hfgd-os4_r50_bs16-30k_pascal-context-59-513"),
                     os.path.join("runs", "sfpn_r50_bs16-30k_pascal-context-59-513")}
  explicit = _settings(f"--flagfile={first}", "--model_dir=/tmp/mine", mode="flops")
  assert explicit.train.model_dir == "/tmp/mine"
  assert explicit.train.checkpoint_dir == "/tmp/mine/checkpoints"
