"""Command-line flags, grouped by concern, and their resolution into checked configs.

Model flags are generated from ModelConfig so the two never drift apart; data, training, eval and
output flags fill TrainConfig/EvalConfig (hfgd_tf/run_config.py). `run_config_from_flags` checks
every value and every combination before anything is built, naming the flag at fault.
"""

import dataclasses
import glob
import os
import typing

from absl import flags

from datasets import records

from hfgd_tf.config import (JIT_COMPILE, WARMUP_SCHEDULES, AugmentConfig, EvalConfig, FlagError,
                            ModelConfig, RunSettings, TrainConfig)

# ModelConfig fields no flag sets: the dataset gives the classes and the ignore label, the trainer
# switches synchronized batch norm on whenever there is more than one replica.
_NOT_FLAGS = ("num_classes", "ignore_label", "sync_batch_norm")
_HELP = {
    "backbone": "Backbone name (see hfgd_tf/modeling/backbones).",
    "backbone_output_stride": "Backbone output stride: 32, or 16/8 with dilation (D8 baselines).",
    "drop_path_rate": "Stochastic depth of the backbone; unset = the backbone's own default.",
    "encoder": "Context encoder at OS=32 (Table 1); cae is the paper's CAE.",
    "decoder": "Upsampling decoder: none, sfpn (SemanticFPN) or usfpn (U-SFPN).",
    "decoder_output_stride": "Decoder output stride: 4, or 2 (U-SFPN's extra block).",
    "hfgm": "Guide the decoder with the class kernels (HFGM).",
    "hfgm_axial_attention": "Axial attention inside HFGM (Table 2).",
    "cae_loss_weight": "Weight of the CE on the OS=32 (CAE) logits.",
    "ce_average_valid_only": "Average the CE over labelled pixels only (the original: all).",
}


class _Definer:
  """flags.DEFINE_* bound to one FlagValues (tests parse flagfiles with a fresh one)."""

  def __init__(self, flag_values):
    self.flag_values = flag_values

  def __getattr__(self, kind):
    define = getattr(flags, f"DEFINE_{kind}")
    return lambda *args, **kwargs: define(*args, flag_values=self.flag_values, **kwargs)


def _field_type(field):
  hint = typing.get_type_hints(ModelConfig)[field.name]
  args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
  return args[0] if args else hint


def _model_enums():
  """Allowed values of the model's name flags, from the registries that build them."""
  # pylint: disable=import-outside-toplevel
  from hfgd_tf.modeling.decoders import decoder_names
  from hfgd_tf.modeling.encoders import ENCODERS
  return {"encoder": ENCODERS.names(), "decoder": decoder_names()}


def _model_flag_fields():
  return [field for field in dataclasses.fields(ModelConfig) if field.name not in _NOT_FLAGS]


def define_model_flags(flag_values=flags.FLAGS):
  """Defines one flag per ModelConfig field (same name, default and type)."""
  enums = _model_enums()
  define = _Definer(flag_values)
  for field in _model_flag_fields():
    kind = _field_type(field)
    help_text = _HELP.get(field.name, f"Model config: {field.name.replace('_', ' ')}.")
    if field.name in enums:
      define.enum(field.name, field.default, enums[field.name], help_text)
    else:
      kinds = {bool: define.bool, int: define.integer, float: define.float}
      kinds.get(kind, define.string)(field.name, field.default, help_text)


def model_config_from_flags(flag_values=flags.FLAGS):
  """The ModelConfig the flags describe, validated (errors name the flag)."""
  values = {field.name: flag_values[field.name].value for field in _model_flag_fields()}
  return ModelConfig(**values).validate()


# ---------------------------------------------------------------------------------------------
# Data, training, evaluation and output flags. Each group is one function so a tool that needs only
# some of them (e.g. a converter) defines only those.

MODES = ("train", "pretrain", "eval", "predict", "export", "benchmark", "flops")
OPTIMIZERS = ("sgd", "adamw")
MIXED_PRECISION = ("auto", "none", "float16", "bfloat16")
DISTRIBUTIONS = ("one_device", "mirrored", "multi_worker", "tpu")
CLUSTER_RESOLVERS = ("tf_config", "slurm", "tpu")
BUILTIN_DATA_DIR = os.path.join("runs", "builtin-data")


def _known_dataset(name):
  from datasets import get_dataset_info  # pylint: disable=import-outside-toplevel
  try:
    get_dataset_info(name)
  except ValueError as error:
    raise flags.ValidationError(str(error)) from error
  return True


def define_data_flags(flag_values=flags.FLAGS):
  """Which dataset, where its TFRecords are, and the training augmentation switches."""
  from datasets import dataset_names  # pylint: disable=import-outside-toplevel
  from datasets.tfds_adapters import ADAPTERS  # pylint: disable=import-outside-toplevel
  define = _Definer(flag_values)
  define.string("dataset", "builtin",
                f"Dataset: a converted one ({', '.join(dataset_names())}) or a prepared "
                f"TensorFlow Datasets one ({', '.join(sorted(ADAPTERS))}). Gives num_classes, "
                "class names, palette and the default crop and eval sizes.")
  flags.register_validator("dataset", _known_dataset, flag_values=flag_values)
  define.string("data_dir", None,
                "Folder with <split>-*.tfrecord shards (datasets/convert.py output). For "
                f"dataset=builtin it is generated when missing (default {BUILTIN_DATA_DIR}); for "
                "tfds:... it is the TFDS data folder (default: TFDS's own).")
  define.string("train_split", "train", "Split to train on.")
  define.string("eval_split", "val", "Split to evaluate on.")
  define.integer("crop_height", None, "Training crop height; default: the dataset's.")
  define.integer("crop_width", None, "Training crop width; default: the dataset's.")
  define.integer("eval_height", None, "Eval pad height (>= every image); default: the dataset's.")
  define.integer("eval_width", None, "Eval pad width (>= every image); default: the dataset's.")
  define.float("min_scale", 0.5, "Smallest random scale (min = max = 1: no scaling).")
  define.float("max_scale", 2.0, "Largest random scale.")
  define.float("scale_step", 0.25, "Step between the random scales.")
  define.bool("random_brightness", True, "Random brightness (p=0.5, delta in [-32, 32)).")
  define.bool("photometric_distortion", False,
              "Random contrast and saturation (p=0.5 each), the SOTA recipe's distortion.")
  define.bool("random_flip", True, "Random horizontal flip (p=0.5).")
  define.integer("shuffle_buffer", 1000, "Shuffle buffer, in examples (the original: 4998).")
  define.bool("validate_labels", False,
              "Fail on the first label value that is neither a class nor ignore.")
  define.integer("builtin_num_train", 1000, "dataset=builtin: training examples to generate.")
  define.integer("builtin_num_val", 200, "dataset=builtin: validation examples to generate.")


def define_training_flags(flag_values=flags.FLAGS):
  """Optimiser, schedule, precision, distribution, checkpoints and logging."""
  define = _Definer(flag_values)
  define.integer("batch_size", 16, "GLOBAL batch size, split evenly over the replicas.")
  define.integer("train_steps", 30000, "Training steps (the poly schedule's length).")
  define.enum("optimizer", "sgd", OPTIMIZERS,
              "sgd: momentum + L2 (ablations); adamw: decoupled decay (SOTA recipe).")
  define.float("learning_rate", 0.01, "Initial learning rate (SGD 0.01, AdamW 4e-5).")
  define.float("end_learning_rate", 0.0, "Learning rate at the end of the poly decay.")
  define.float("poly_power", 0.9, "Power of the polynomial decay.")
  define.integer("warmup_steps", 0, "Linear warm-up from 0 before the poly decay.")
  define.enum("warmup_schedule", "decay_to_end", WARMUP_SCHEDULES,
              "With --warmup_steps=W: decay_to_end (poly over the last T-W steps, reaching "
              "end_learning_rate at T) or original (iSeg's: the LR freezes at its step T-W value "
              "from step T-W on); see docs/training.md.")
  define.float("momentum", 0.9, "SGD momentum.")
  define.float("weight_decay", 1e-4,
               "SGD: L2 coefficient, loss += wd * sum(w^2) over every conv/dense kernel.")
  define.bool("weight_decay_head_only", False,
              "SGD: L2 on the head only (not the backbone), as Keras 2 effectively did in the "
              "original, whose backbone was built before the regulariser was set.")
  define.float("adamw_weight_decay", 0.05,
               "AdamW decoupled weight decay (bias, norm, position and patch-embedding variables "
               "excluded).")
  define.float("layerwise_lr_decay", None,
               "Layer-wise LR decay of the backbone (e.g. 0.9); unset: off.")
  define.enum("mixed_precision", "none", MIXED_PRECISION,
              "Compute dtype: float16 (GPUs, dynamic loss scaling), bfloat16 (TPUs, recent GPUs "
              "and CPUs with AVX512-BF16), none (float32), or auto (the recipes': bfloat16 on TPUs "
              "and GPUs of compute capability >= 8, float16 on older GPUs, float32 on CPUs).")
  define.enum("distribution", "one_device", DISTRIBUTIONS,
              "one_device; mirrored (all local GPUs, else the logical CPUs); multi_worker "
              "(TF_CONFIG); tpu (--tpu).")
  define.string("tpu", None, "TPU name or address for distribution=tpu ('' = local TPU).")
  define.enum("cluster_resolver", None, CLUSTER_RESOLVERS,
              "Where multi_worker finds its cluster: tf_config (default; the TF_CONFIG variable) "
              "or slurm (srun's SLURM_* variables, no TF_CONFIG); tpu (distribution=tpu's).")
  define.integer("slurm_port_base", 8888,
                 "cluster_resolver=slurm: port of a node's first worker; its n-th task uses "
                 "this + n.")
  define.enum("jit_compile", "auto", JIT_COMPILE,
              "Compile train and eval steps with XLA: auto = on for GPUs and TPUs, off on CPUs "
              "(where XLA is slower than oneDNN).")
  define.integer("steps_per_loop", 1,
                 "Training steps per tf.function call (a tf.range loop over the iterator, as "
                 "Model Garden does for TPUs); logs show the loss averaged over the loop. Loops "
                 "end early at log/checkpoint/eval/image steps, so cadences stay exact.")
  define.string("checkpoint_dir", None,
                "Checkpoints (resumed automatically); default <model_dir>/checkpoints.")
  define.integer("checkpoint_every", 1000, "Steps between checkpoints.")
  define.integer("max_checkpoints_to_keep", 3, "Checkpoints kept.")
  define.bool("checkpoint_input_pipeline", True,
              "One replica: save the tf.data iterator in checkpoints so a resume continues the "
              "exact data stream (costs the shuffle buffer's size on disk); otherwise a resume "
              "re-seeds the pipeline by step.")
  define.integer("log_every", 50, "Steps between console/TensorBoard loss logs.")
  define.integer("image_summary_every", 1000,
                 "Steps between TensorBoard images (input, ground truth, prediction).")
  define.string("tensorboard_dir", None, "TensorBoard logs; default <checkpoint_dir>/tb.")
  define.integer("seed", 0, "Seed of Python, numpy, TF, Keras and the input pipeline.")
  define.bool("deterministic", False,
              "Deterministic ops (tf.config.experimental.enable_op_determinism): two runs give "
              "identical weights, at some speed cost.")
  define.string("backbone_weights", None,
                "Pretrained backbone weights (.h5, .weights.h5, .safetensors, .pth).")
  define.bool("allow_partial_weights", False,
              "Skip (and list) backbone variables missing from --backbone_weights.")
  define.integer("pretrain_steps", 0,
                 "Steps of backbone pretraining on built-in shape classification (hfgd_tf/"
                 "pretrain.py, the paper's ImageNet stage in miniature), written to "
                 "<model_dir>/pretrain/<backbone>.weights.h5; mode=train then starts from them "
                 "(a resumed run skips it); 0: none.")
  define.integer("eval_every", 0, "Steps between single-scale evaluations; 0: none.")
  define.integer("bn_recalibration_batches", 0,
                 "After training, recompute the batch-norm moving statistics as the average of "
                 "this many training batches' statistics (for runs too short for --bn_momentum to "
                 "forget its initial values); 0: keep them, and warn when they are stale.")
  define.bool("eval_after_train", True, "mode=train: evaluate once training ends.")
  define.bool("predict_after_train", False,
              "mode=train: write colourised predictions of the eval split at the end.")
  define.bool("export_after_train", False, "mode=train: export a SavedModel at the end.")


def define_eval_flags(flag_values=flags.FLAGS):
  """Inference protocol: scales, flip, sliding window, batch."""
  define = _Definer(flag_values)
  define.list("scales", ["1.0"], "Inference scales, e.g. 0.5,0.75,1.0,1.25,1.5,1.75 (logits "
              "averaged).")
  define.bool("flip", False, "Also infer on the flipped image (logits averaged).")
  define.string("sliding_window", None,
                "Sliding-window size 'height,width' (stride 2/3 of the window); unset: off.")
  define.integer("eval_batch_size", 8, "Global evaluation batch size.")
  define.integer("max_eval_examples", None, "Evaluate only the first N examples.")


def define_output_flags(flag_values=flags.FLAGS):
  """The mode, where a run's files go, and what predict reads."""
  define = _Definer(flag_values)
  define.enum("mode", "train", MODES, "What to run.")
  define.string("experiment_name", None,
                "Name of the run; default: the stem of the first --flagfile on the command line "
                "(e.g. hfgd-os4_r50_bs16-30k_pascal-context-59-513).")
  define.string("model_dir", None,
                "Run folder: parent of checkpoints, exports and predictions; default "
                "<checkpoint_dir>, else runs/<experiment_name>, else runs/<dataset>.")
  define.string("export_dir", None, "SavedModel folder; default <model_dir>/export.")
  define.string("predict_input", None, "Images to predict: a folder or a glob.")
  define.string("predict_output_dir", None,
                "Colourised predictions; default <model_dir>/predictions.")
  define.integer("benchmark_steps", 3, "mode=benchmark: timed steps per model and round.")
  define.integer("benchmark_rounds", 7, "mode=benchmark: rounds of interleaved timing (the "
                 "report gives the median and range of the per-round ratios).")
  define.bool("benchmark_memory", True, "mode=benchmark: also measure each model's peak memory "
              "in its own process.")
  define.integer("benchmark_batch_size", 2, "mode=benchmark: batch of the timed train and "
                 "inference steps (not --batch_size: a recipe's 16 at 513^2 needs ~23 GB on CPU).")
  define.integer("flops_height", 513, "Input height of the FLOPs count.")
  define.integer("flops_width", 513, "Input width of the FLOPs count.")
  define.list("flops_backbones", [], "mode=flops: count these backbones alone (with a 1000-way "
              "classifier, at flops_height, against their published figures) instead of the model.")
  define.bool("export_overwrite", False, "Replace an existing --export_dir (once the new export is "
              "complete).")


def define_all_flags(flag_values=flags.FLAGS):
  """Every flag main.py understands, by group."""
  for define in (define_model_flags, define_data_flags, define_training_flags, define_eval_flags,
                 define_output_flags):
    define(flag_values)


def _fail(flag, message):
  raise FlagError(f"--{flag}: {message}")


def _positive(flag_values, *names):
  for name in names:
    value = flag_values[name].value
    if value is not None and value <= 0:
      _fail(name, f"must be > 0, got {value}")


def _parse_scales(values):
  try:
    scales = tuple(float(value) for value in values)
  except ValueError:
    _fail("scales", f"expected comma-separated numbers, got {','.join(values)!r}")
  if not scales or any(scale <= 0 for scale in scales):
    _fail("scales", f"expected positive numbers, got {','.join(values)!r}")
  return scales


def _parse_window(value):
  if value is None:
    return None
  try:
    height, width = (int(part) for part in value.split(","))
  except ValueError:
    _fail("sliding_window", f"expected 'height,width', got {value!r}")
  if height <= 0 or width <= 0:
    _fail("sliding_window", f"sizes must be > 0, got {value!r}")
  return height, width


def _check_dataset_info(data_dir, dataset_info, splits):
  """A converted folder's dataset_info.json must describe the dataset the flags ask for."""
  from datasets import dataset_info as info_file  # pylint: disable=import-outside-toplevel
  try:
    info_file.check_info(data_dir, dataset_info, splits)
  except info_file.DataDirError as error:
    _fail("data_dir", str(error))
def _check_tfds_data(train, splits):
  """A TFDS dataset must be prepared in --data_dir and have the splits the run reads."""
  # pylint: disable=import-outside-toplevel  (tensorflow-datasets only for tfds: datasets)
  try:
    from datasets import tfds_source
  except ImportError as error:
    _fail("dataset", f"{train.dataset} needs tensorflow-datasets ({error}); pip install -r "
          "requirements-tfds.txt")
  from datasets.tfds_adapters import get_adapter
  adapter = get_adapter(train.dataset)
  try:
    builder = tfds_source.load_builder(adapter, train.data_dir)
  except tfds_source.DatasetNotPreparedError as error:
    _fail("data_dir", str(error))
  for split in splits:
    try:
      tfds_source.resolve_split(adapter, builder, split)
    except ValueError as error:
      _fail("train_split" if split == train.train_split else "eval_split", str(error))


def _check_data_dir(train, dataset_info, needs_data, splits):
  if train.data_dir is None:
    if train.dataset != "builtin" and needs_data:
      _fail("data_dir", f"required for dataset={train.dataset} (the folder of its converted "
            "<split>-*.tfrecord shards; see datasets/convert.py)")
    if train.dataset == "builtin":
      train.data_dir = BUILTIN_DATA_DIR
    return
  if "://" not in train.data_dir and os.path.isdir(train.data_dir):
    _check_dataset_info(train.data_dir, dataset_info, splits)
  if train.dataset == "builtin" or not needs_data or "://" in train.data_dir:
    return  # The built-in dataset is generated on demand; remote folders (gs://) are not listed.
  if not os.path.isdir(train.data_dir):
    _fail("data_dir", f"{train.data_dir} is not a folder")
  for split in splits:
    if not glob.glob(records.split_files(train.data_dir, split)):
      _fail("data_dir", f"no {split}-*.tfrecord shards in {train.data_dir} (split of "
            f"dataset {dataset_info.name}; check --train_split/--eval_split)")


def run_config_from_flags(flag_values=flags.FLAGS, mode="train"):
  """RunSettings from the flags; FlagError naming the flag for any bad or inconsistent value.

  Needs no TensorFlow and builds nothing, so a wrong flagfile fails in a second.
  """
  # pylint: disable=import-outside-toplevel
  from datasets import get_dataset_info, tfds_adapters
  dataset_info = get_dataset_info(flag_values.dataset)
  values = {name: flag_values[name].value for name in TrainConfig.__dataclass_fields__
            if name in flag_values}
  augment = AugmentConfig(
      crop_height=flag_values.crop_height or dataset_info.crop_size[0],
      crop_width=flag_values.crop_width or dataset_info.crop_size[1],
      min_scale=flag_values.min_scale, max_scale=flag_values.max_scale,
      scale_step=flag_values.scale_step, random_brightness=flag_values.random_brightness,
      photometric_distortion=flag_values.photometric_distortion, flip=flag_values.random_flip,
      ignore_label=dataset_info.ignore_label)
  train = TrainConfig(augment=augment, **values)

  try:
    model = dataclasses.replace(model_config_from_flags(flag_values),
                                num_classes=dataset_info.num_classes,
                                ignore_label=dataset_info.ignore_label).validate()
  except ValueError as error:
    raise FlagError(f"model flags: {error}") from error

  _positive(flag_values, "batch_size", "train_steps", "learning_rate", "checkpoint_every",
            "max_checkpoints_to_keep", "log_every", "image_summary_every", "eval_batch_size",
            "crop_height", "crop_width", "eval_height", "eval_width", "benchmark_steps",
            "benchmark_rounds", "benchmark_batch_size",
            "shuffle_buffer", "max_eval_examples", "poly_power", "builtin_num_train",
            "builtin_num_val", "flops_height", "flops_width", "steps_per_loop")
  for name in ("weight_decay", "adamw_weight_decay", "end_learning_rate", "warmup_steps",
               "eval_every", "momentum", "bn_recalibration_batches"):
    if flag_values[name].value < 0:
      _fail(name, f"must be >= 0, got {flag_values[name].value}")
  if train.warmup_steps >= train.train_steps:
    _fail("warmup_steps", f"{train.warmup_steps} must be < train_steps={train.train_steps}")
  if train.end_learning_rate > train.learning_rate:
    _fail("end_learning_rate", f"{train.end_learning_rate} exceeds learning_rate "
          f"{train.learning_rate}")
  if train.layerwise_lr_decay is not None and not 0 < train.layerwise_lr_decay <= 1:
    _fail("layerwise_lr_decay", f"must be in (0, 1], got {train.layerwise_lr_decay}")
  if not 0 < augment.min_scale <= augment.max_scale:
    _fail("min_scale", f"need 0 < min_scale <= max_scale, got {augment.min_scale} and "
          f"{augment.max_scale}")
  if train.deterministic and train.jit_compile == "on":
    _fail("jit_compile", "on cannot be deterministic (XLA has no deterministic max-pool gradient); "
          "use --jit_compile=auto or off with --deterministic")
  if train.distribution == "tpu" and train.tpu is None:
    _fail("tpu", "distribution=tpu needs --tpu (a TPU name or address, '' for a local TPU)")
  if train.tpu is not None and train.distribution != "tpu":
    _fail("distribution", f"--tpu is set but distribution={train.distribution}; use "
          "--distribution=tpu")
  resolvers = {"multi_worker": ("tf_config", "slurm"), "tpu": ("tpu",)}
  if train.cluster_resolver not in resolvers.get(train.distribution, ()) + (None,):
    _fail("cluster_resolver", f"{train.cluster_resolver} does not apply to distribution="
          f"{train.distribution} (multi_worker: tf_config or slurm; tpu: tpu)")
  if train.distribution == "multi_worker" and train.cluster_resolver == "slurm" and (
      "SLURM_PROCID" not in os.environ):
    _fail("cluster_resolver", "slurm needs the SLURM_* variables of a job step: launch each "
          "worker with srun")
  if (train.distribution == "multi_worker" and train.cluster_resolver != "slurm"
      and "TF_CONFIG" not in os.environ):
    _fail("distribution", "multi_worker needs the TF_CONFIG environment variable (cluster and "
          "task of this worker), or --cluster_resolver=slurm under srun")
  if train.backbone_weights is not None and not os.path.isfile(train.backbone_weights):
    _fail("backbone_weights", f"{train.backbone_weights} does not exist")
  if train.pretrain_steps < 0:
    _fail("pretrain_steps", f"must be >= 0, got {train.pretrain_steps}")
  if train.pretrain_steps and train.backbone_weights is not None:
    _fail("pretrain_steps", "pretraining writes the backbone's weights, but "
          f"--backbone_weights={train.backbone_weights} gives them too; set one of the two")
  if train.pretrain_steps and mode == "train" and train.distribution in ("multi_worker", "tpu"):
    _fail("pretrain_steps", f"pretraining runs on one machine, not with distribution="
          f"{train.distribution}: run --mode=pretrain first, then train with --backbone_weights")
  if mode == "pretrain" and not train.pretrain_steps:
    _fail("pretrain_steps", "mode=pretrain needs --pretrain_steps > 0")

  evaluation = EvalConfig(
      scales=_parse_scales(flag_values.scales), flip=flag_values.flip,
      sliding_window=_parse_window(flag_values.sliding_window),
      batch_size=flag_values.eval_batch_size,
      eval_height=flag_values.eval_height or dataset_info.eval_size[0],
      eval_width=flag_values.eval_width or dataset_info.eval_size[1],
      max_examples=flag_values.max_eval_examples, jit_compile=flag_values.jit_compile)
  if augment.crop_height > evaluation.eval_height or augment.crop_width > evaluation.eval_width:
    _fail("crop_height", f"crop {augment.crop_height}x{augment.crop_width} is larger than the eval "
          f"size {evaluation.eval_height}x{evaluation.eval_width}; lower the crop or raise "
          "--eval_height/--eval_width")

  if train.model_dir is None:
    train.model_dir = train.checkpoint_dir or os.path.join(
        "runs", flag_values.experiment_name or train.dataset.replace(":", "_").replace("/", "_"))
  train.checkpoint_dir = train.checkpoint_dir or os.path.join(train.model_dir, "checkpoints")
  train.tensorboard_dir = train.tensorboard_dir or os.path.join(train.checkpoint_dir, "tb")
  needs_data = mode in ("train", "eval")
  splits = {"train": [train.train_split, train.eval_split] if train.eval_every or
                     train.eval_after_train else [train.train_split],
            "eval": [train.eval_split]}.get(mode, [])
  if tfds_adapters.is_tfds_name(train.dataset):
    if needs_data:
      _check_tfds_data(train, splits)
  else:
    _check_data_dir(train, dataset_info, needs_data, splits)
  if mode == "predict" and flag_values.predict_input is None:
    _fail("predict_input", "required for mode=predict (a folder or a glob of images)")
  return RunSettings(
      mode=mode, model=model, train=train, eval=evaluation, dataset_info=dataset_info,
      export_dir=flag_values.export_dir or os.path.join(train.model_dir, "export"),
      export_overwrite=flag_values.export_overwrite,
      export_after_train=flag_values.export_after_train,
      predict_input=flag_values.predict_input,
      predict_output_dir=(flag_values.predict_output_dir
                          or os.path.join(train.model_dir, "predictions")),
      predict_after_train=flag_values.predict_after_train,
      benchmark_steps=flag_values.benchmark_steps,
      benchmark_rounds=flag_values.benchmark_rounds,
      benchmark_batch_size=flag_values.benchmark_batch_size,
      benchmark_memory=flag_values.benchmark_memory,
      flops_size=(flag_values.flops_height, flag_values.flops_width),
      flops_backbones=tuple(flag_values.flops_backbones))
