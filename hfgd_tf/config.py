"""Every configuration of a run, as dataclasses whose fields are the command-line flags:

  ModelConfig    what to build; each row of the paper's tables is one setting (see experiments/);
  AugmentConfig  the training augmentation;
  TrainConfig    data, optimisation, distribution, checkpoints;
  EvalConfig     the inference protocol;
  RunSettings    all of the above plus the mode's own settings, resolved and cross-checked.

Each field is the flag of the same name, with the field's type and default (hfgd_tf/flags/
defines them from here), except four whose bare name would not say what it sets among all the
flags (`flag(..., name=...)`): AugmentConfig.flip is --random_flip, EvalConfig.batch_size is
--eval_batch_size, EvalConfig.max_examples is --max_eval_examples and EvalConfig.rescale is
--eval_rescale. `flag(...)` adds its help and
checks, `not_a_flag(...)` marks the few fields that the dataset or the trainer fill. Nothing here
imports TensorFlow.
"""

import dataclasses
import os
from typing import Optional, Tuple

import numpy as np

# The label of unlabelled pixels, in every dataset, record, loss and metric.
IGNORE_LABEL = 255
# Batch-norm defaults of the original codebase: momentum 0.9997 (paper, Sec. 4) everywhere, and
# Keras' default epsilon 1e-3, which the original never overrode for heads.
BN_MOMENTUM = 0.9997
HEAD_BN_EPSILON = 1e-3
# CAR's end BN keeps Keras' default momentum: the original creates it in build(), after it set
# --bn_momentum on the layers that existed (CAR car_core/car.py:235; the car-step reference).
CAR_END_BN_MOMENTUM = 0.9


# The --encoder and --decoder values: the names hfgd_tf/modeling/encoders.py and decoders.py
# register (tests/test_flags.py keeps them equal), stated here so that the flags need no TensorFlow.
ENCODERS = ("aspp", "cae", "identity", "ocr", "sa", "sa_car")
DECODERS = ("none", "sfpn", "usfpn")
MODES = ("train", "pretrain", "eval", "predict", "export", "benchmark", "flops")
OPTIMIZERS = ("sgd", "adamw")
# The kernels the SGD recipe's L2 covers (hfgd_tf/optimization.py `l2_variables`, docs/training.md).
WEIGHT_DECAY_SCOPES = ("original", "head", "all")
# Poly decay after a warm-up: ours reaches the end LR at the last step; iSeg's freezes
# (optimization.py).
WARMUP_SCHEDULES = ("decay_to_end", "original")
MIXED_PRECISION = ("auto", "none", "float16", "bfloat16")
DISTRIBUTIONS = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
# Where a multi_worker/tpu run finds its cluster (distribution.py).
CLUSTER_RESOLVERS = ("tf_config", "slurm", "tpu")
# XLA for the train/eval steps: auto = on for GPUs and TPUs, off on CPUs (distribution.py).
JIT_COMPILE = ("auto", "on", "off")
# What --mode=export writes, what the SavedModel takes, and the LiteRT weight types (export.py,
# export_formats.py; docs/serving.md).
EXPORT_FORMATS = ("saved_model", "tflite", "onnx")
EXPORT_INPUTS = ("image_tensor", "image_bytes", "both")
TFLITE_TYPES = ("float32", "float16", "int8")

# Where dataset=builtin is generated when --data_dir is unset.
BUILTIN_DATA_DIR = os.path.join("runs", "builtin-data")

# Checks of a set flag's value: (predicate, what it must be).
POSITIVE = (lambda value: value > 0, "must be > 0")
NON_NEGATIVE = (lambda value: value >= 0, "must be >= 0")


class FlagError(ValueError):
  """A flag value that cannot work; the message starts with --<flag>: and says why."""


def flag(default, doc=None, **options):
  """A config field that is also the flag of its name, with its default (hfgd_tf/flags/).

  doc: the help (a function returning it when it lists what is installed). options:
    name          the flag's name when it is not the field's;
    choices       allowed values (an enum flag);
    check         (predicate, "must be ...") a set value must satisfy (POSITIVE, NON_NEGATIVE);
    from_dataset  the flag is unset by default, meaning the dataset's value;
    kind, parse   for non-scalar fields: the absl flag kind ("list", "string") and a function from
                  the flag's value to the field's (ValueError: what is wrong);
    validator     checked when the flags are parsed (ValueError: what is wrong);
    names_a_dataset  the value must be a known dataset, which the help lists (the flags check it:
                  datasets/ imports this module);
    shared        the flag is another config's field of the same name and default (jit_compile).
  """
  return dataclasses.field(default=default, metadata={"doc": doc, **options})


def not_a_flag(**field_options):
  """A config field no flag sets (the dataset, the trainer or the flags' resolution fill it)."""
  return dataclasses.field(metadata={"flag": False}, **field_options)


def _parse_scales(values):
  try:
    scales = tuple(float(value) for value in values)
  except ValueError:
    raise ValueError(f"expected comma-separated numbers, got {','.join(values)!r}") from None
  if not scales or any(scale <= 0 for scale in scales):
    raise ValueError(f"expected positive numbers, got {','.join(values)!r}")
  return scales


def _parse_tflite_types(values):
  types = tuple(values)
  unknown = [value for value in types if value not in TFLITE_TYPES]
  if not types or unknown:
    raise ValueError(f"expected some of {','.join(TFLITE_TYPES)}, got {','.join(values)!r}")
  return types


def _parse_window(value):
  if value is None:
    return None
  try:
    height, width = (int(part) for part in value.split(","))
  except ValueError:
    raise ValueError(f"expected 'height,width', got {value!r}") from None
  if height <= 0 or width <= 0:
    raise ValueError(f"sizes must be > 0, got {value!r}")
  return height, width


def _parse_rescale(value):
  """'long,short' -> (long, short); unset or empty (a flagfile's setting turned off) -> None."""
  if not value:
    return None
  try:
    long_side, short_side = (int(part) for part in value.split(","))
  except ValueError:
    raise ValueError(f"expected 'long,short' (e.g. 2048,512) or nothing, got {value!r}") from None
  if long_side <= 0 or short_side <= 0:
    raise ValueError(f"sides must be > 0, got {value!r}")
  return long_side, short_side


@dataclasses.dataclass
class AugmentConfig:
  """Training augmentation; defaults are the HFGD-era iDS ones at crop 513.

  Set min_scale = max_scale = 1 to switch random scaling off.
  """
  crop_height: int = flag(513, "Training crop height; default: the dataset's.", check=POSITIVE,
                          from_dataset=True)
  crop_width: int = flag(513, "Training crop width; default: the dataset's.", check=POSITIVE,
                         from_dataset=True)
  min_scale: float = flag(0.5, "Smallest random scale (min = max = 1: no scaling).")
  max_scale: float = flag(2.0, "Largest random scale.")
  scale_step: float = flag(0.25, "Step between the random scales.")
  random_brightness: bool = flag(True, "Random brightness (p=0.5, delta in [-32, 32)).")
  photometric_distortion: bool = flag(
      False, "Random contrast and saturation (p=0.5 each), the SOTA recipe's distortion.")
  flip: bool = flag(True, "Random horizontal flip (p=0.5).", name="random_flip")
  ignore_label: int = not_a_flag(default=IGNORE_LABEL)

  def scales(self):
    """The discrete scale set, e.g. [0.5, 0.75, ..., 2.0] (the original's linspace)."""
    if self.max_scale < self.min_scale:
      raise ValueError(f"max_scale {self.max_scale} < min_scale {self.min_scale}")
    if self.max_scale == self.min_scale:
      return np.array([self.min_scale], np.float32)
    if self.scale_step <= 0:
      raise ValueError(f"scale_step must be > 0, got {self.scale_step}")
    count = int(round((self.max_scale - self.min_scale) / self.scale_step)) + 1
    return np.linspace(self.min_scale, self.max_scale, count).astype(np.float32)


@dataclasses.dataclass
class ModelConfig:
  """What to build. Defaults are HFGD (OS=4) with ResNet-50 on Pascal Context 59."""

  # Filled from the dataset, not from flags.
  num_classes: int = not_a_flag(default=59)
  ignore_label: int = not_a_flag(default=IGNORE_LABEL)

  # Backbone (hfgd_tf/modeling/backbones): name, output stride (8/16 = dilated), stochastic depth.
  backbone: str = flag("resnet50", "Backbone name (see hfgd_tf/modeling/backbones).")
  backbone_output_stride: int = flag(
      32, "Backbone output stride: 32, or 16/8 with dilation (D8 baselines).")
  drop_path_rate: Optional[float] = flag(
      None, "Stochastic depth of the backbone; unset = the backbone's own default.")

  # Context encoder at the backbone's deepest level (Table 1): identity, aspp, ocr, sa (plain
  # self-attention, the NL head), sa_car (the CAR paper's SA + CAR head, used at D8) or cae (ours).
  encoder: str = flag("cae", "Context encoder at OS=32 (Table 1); cae is the paper's CAE.",
                      choices=ENCODERS)
  encoder_filters: int = 512
  # CAE: kernel size of its two leading convs (1x1 beat 3x3 in the paper) and the width of CAR's
  # projection. 256 reads CAE's "trailing conv" as CAR's own end conv (reference 10.5.1); any other
  # width adds a separate 1x1 conv-BN-ReLU to `decoder_filters` after CAR.
  cae_kernel_size: int = 1
  cae_car_filters: int = 256

  # CAR (reference section 5): which losses, thresholds and rates.
  car_intra_loss: bool = True
  car_c2c_loss: bool = True
  car_c2p_loss: bool = True
  car_intra_loss_rate: float = 1.0
  car_inter_loss_rate: float = 1.0
  car_c2c_threshold: float = 0.5
  car_c2p_threshold: float = 0.25

  # Upsampling decoder: none (classify at the encoder's stride), sfpn (SemanticFPN, 1x1 laterals)
  # or usfpn (U-SFPN, 3x3 laterals); output stride 4, or 2 with one more conv-upsample block.
  decoder: str = flag("usfpn", "Upsampling decoder: none, sfpn (SemanticFPN) or usfpn (U-SFPN).",
                      choices=DECODERS)
  decoder_output_stride: int = flag(4, "Decoder output stride: 4, or 2 (U-SFPN's extra block).")
  decoder_filters: int = 256

  # HFGM: stop-gradients on the decoder's inputs, the decoder classified by the encoder's class
  # kernels under stop-gradient, and (optionally) an axial-attention layer before them.
  hfgm: bool = flag(True, "Guide the decoder with the class kernels (HFGM).")
  hfgm_axial_attention: bool = flag(True, "Axial attention inside HFGM (Table 2).")
  axial_attention_heads: int = 4

  # Normalisation and resizing.
  # sync_batch_norm is set by the trainer: on with more than one replica.
  sync_batch_norm: bool = not_a_flag(default=False)
  bn_momentum: float = BN_MOMENTUM
  head_bn_epsilon: float = HEAD_BN_EPSILON
  align_corners: bool = True

  # Loss weights: CE on the encoder's logits (HFGM's OS=32 path) and on OCR's auxiliary logits;
  # CE averaged over all pixels, ignored ones included (the original), or over valid pixels only.
  cae_loss_weight: float = flag(1.0, "Weight of the CE on the OS=32 (CAE) logits.")
  aux_loss_weight: float = 0.4
  ce_average_valid_only: bool = flag(
      False, "Average the CE over labelled pixels only (the original: all).")

  def validate(self):
    """Raises ValueError naming the field for values that cannot build a model."""
    def check(field, allowed):
      value = getattr(self, field)
      if value not in allowed:
        raise ValueError(f"{field}={value!r} is not one of {', '.join(map(str, allowed))}")

    check("decoder_output_stride", (2, 4))
    check("backbone_output_stride", (8, 16, 32))
    check("cae_kernel_size", (1, 3))
    if self.num_classes < 2:
      raise ValueError(f"num_classes={self.num_classes} must be at least 2")
    if 0 <= self.ignore_label < self.num_classes:
      raise ValueError(f"ignore_label={self.ignore_label} is a class id; classes are "
                       f"0..{self.num_classes - 1}, use 255")
    if self.hfgm and self.decoder == "none":
      raise ValueError("hfgm=True needs an upsampling decoder; set decoder to sfpn or usfpn")
    if self.hfgm and self.encoder not in ("cae", "aspp"):
      raise ValueError(
          f"hfgm=True reuses the encoder's class kernels on {self.decoder_filters}-D decoder "
          f"features, so the encoder must output {self.decoder_filters}-D features: use "
          f"encoder=cae or aspp, not {self.encoder!r}")
    if self.decoder != "none" and self.backbone_output_stride != 32:
      raise ValueError("an upsampling decoder reads the OS=4..32 pyramid; set "
                       f"backbone_output_stride=32, not {self.backbone_output_stride}")
    if self.hfgm_axial_attention and self.decoder_filters % self.axial_attention_heads:
      raise ValueError(f"decoder_filters={self.decoder_filters} does not split into "
                       f"axial_attention_heads={self.axial_attention_heads}")
    return self

  def to_dict(self):
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values):
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
      raise ValueError(f"unknown model config fields: {', '.join(unknown)}")
    return cls(**values)


@dataclasses.dataclass
class EvalConfig:
  """Inference protocol: logits averaged over scales (and flips), optionally window by window."""
  scales: Tuple[float, ...] = flag(
      (1.0,), "Inference scales, e.g. 0.5,0.75,1.0,1.25,1.5,1.75 (logits averaged).",
      kind="list", parse=_parse_scales)
  flip: bool = flag(False, "Also infer on the flipped image (logits averaged).")
  sliding_window: Optional[Tuple[int, int]] = flag(
      None, "Sliding-window size 'height,width' (stride 2/3 of the window); unset: off.",
      kind="string", parse=_parse_window)
  batch_size: int = flag(8, "Global evaluation batch size.", name="eval_batch_size",
                         check=POSITIVE)
  eval_height: int = flag(513, "Eval pad height (>= every image); default: the dataset's.",
                          check=POSITIVE, from_dataset=True)
  eval_width: int = flag(513, "Eval pad width (>= every image); default: the dataset's.",
                         check=POSITIVE, from_dataset=True)
  max_examples: Optional[int] = flag(None, "Evaluate only the first N examples.",
                                     name="max_eval_examples", check=POSITIVE)
  rescale: Optional[Tuple[int, int]] = flag(
      None, "'long,short' (e.g. 2048,512 for ADE20K, as mmseg tests): resize each eval image "
      "keeping its ratio so its sides fit, batch it with images of its size (no padding to the "
      "eval size, which is then unused) and score the prediction resized back to the label's "
      "own resolution; unset: pad every image to the eval size, as the original did.",
      name="eval_rescale", kind="string", parse=_parse_rescale)
  jit_compile: str = flag("auto", shared=True)


@dataclasses.dataclass
class TrainConfig:
  """How to train: data, optimisation, distribution, checkpoints and logging."""
  dataset: str = flag("builtin", "Dataset: a converted one or a prepared TensorFlow Datasets one. "
                       "Gives num_classes, class names, palette and the default crop and eval "
                       "sizes.", names_a_dataset=True)
  data_dir: Optional[str] = flag(
      None, "Folder with <split>-*.tfrecord shards (datasets/convert.py output). For "
      f"dataset=builtin it is generated when missing (default {BUILTIN_DATA_DIR}); for tfds:... "
      "it is the TFDS data folder (default: TFDS's own).")
  builtin_num_train: int = flag(1000, "dataset=builtin: training examples to generate.",
                                check=POSITIVE)
  builtin_num_val: int = flag(200, "dataset=builtin: validation examples to generate.",
                              check=POSITIVE)
  train_split: str = flag("train", "Split to train on.")
  eval_split: str = flag("val", "Split to evaluate on.")
  augment: AugmentConfig = not_a_flag(default_factory=AugmentConfig)
  shuffle_buffer: int = flag(1000, "Shuffle buffer, in examples (the original: 4998).",
                             check=POSITIVE)
  validate_labels: bool = flag(
      False, "Fail on the first label value that is neither a class nor ignore.")

  batch_size: int = flag(16, "GLOBAL batch size, split evenly over the replicas.", check=POSITIVE)
  train_steps: int = flag(30000, "Training steps (the poly schedule's length).", check=POSITIVE)
  optimizer: str = flag("sgd", "sgd: momentum + L2 (ablations); adamw: decoupled decay (SOTA "
                        "recipe).", choices=OPTIMIZERS)
  learning_rate: float = flag(0.01, "Initial learning rate (SGD 0.01, AdamW 4e-5).",
                              check=POSITIVE)
  end_learning_rate: float = flag(0.0, "Learning rate at the end of the poly decay.",
                                  check=NON_NEGATIVE)
  poly_power: float = flag(0.9, "Power of the polynomial decay.", check=POSITIVE)
  warmup_steps: int = flag(0, "Linear warm-up from 0 before the poly decay.", check=NON_NEGATIVE)
  warmup_schedule: str = flag(
      "decay_to_end", "With --warmup_steps=W: decay_to_end (poly over the last T-W steps, "
      "reaching end_learning_rate at T) or original (iSeg's: the LR freezes at its step T-W value "
      "from step T-W on); see docs/training.md.", choices=WARMUP_SCHEDULES)
  momentum: float = flag(0.9, "SGD momentum.", check=NON_NEGATIVE)
  weight_decay: float = flag(
      1e-4, "SGD: L2 coefficient, loss += wd * sum(w^2) over the kernels of "
      "--weight_decay_scope.", check=NON_NEGATIVE)
  weight_decay_scope: str = flag(
      "original", "SGD: the kernels --weight_decay covers. original: those the original code "
      "penalised (Keras 2 honoured its regulariser only on layers built after it was set: not the "
      "pretrained backbone, not layers created in another layer's build(); docs/training.md lists "
      "them per model); head: every kernel outside the backbone; all: every conv/dense kernel "
      "(what Keras 3 would do).", choices=WEIGHT_DECAY_SCOPES)
  adamw_weight_decay: float = flag(
      0.05, "AdamW decoupled weight decay (bias, norm, position and patch-embedding variables "
      "excluded).", check=NON_NEGATIVE)
  layerwise_lr_decay: Optional[float] = flag(
      None, "Layer-wise LR decay of the backbone (e.g. 0.9); unset: off.",
      check=(lambda value: 0 < value <= 1, "must be in (0, 1]"))
  mixed_precision: str = flag(
      "none", "Compute dtype: float16 (GPUs, dynamic loss scaling), bfloat16 (TPUs, recent GPUs "
      "and CPUs with AVX512-BF16), none (float32), or auto (the recipes': bfloat16 on TPUs and "
      "GPUs of compute capability >= 8, float16 on older GPUs, float32 on CPUs); every mode "
      "computes in it (hfgd_tf/precision.py).", choices=MIXED_PRECISION)
  distribution: str = flag(
      "auto", "auto (the TPU when one is attached, all local GPUs when there are several, else one "
      "device); one_device; mirrored (all local GPUs, else the logical CPUs); multi_worker "
      "(TF_CONFIG); tpu (--tpu).", choices=DISTRIBUTIONS)
  tpu: Optional[str] = flag(None, "TPU name or address for distribution=tpu ('' = local TPU).")
  cluster_resolver: Optional[str] = flag(
      None, "Where multi_worker finds its cluster: tf_config (default; the TF_CONFIG variable) or "
      "slurm (srun's SLURM_* variables, no TF_CONFIG); tpu (distribution=tpu's).",
      choices=CLUSTER_RESOLVERS)
  slurm_port_base: int = flag(
      8888, "cluster_resolver=slurm: port of a node's first worker; its n-th task uses this + n.",
      check=POSITIVE)
  jit_compile: str = flag(
      "auto", "Compile train and eval steps with XLA: auto = on for GPUs and TPUs, off on CPUs "
      "(where XLA is slower than oneDNN).", choices=JIT_COMPILE)
  steps_per_loop: int = flag(
      1, "Training steps per tf.function call (a tf.range loop over the iterator, as Model "
      "Garden does for TPUs). Loops end early at log/checkpoint/eval/image steps, so every "
      "cadence stays exact: a loop is never longer than log_every.", check=POSITIVE)

  model_dir: Optional[str] = flag(
      None, "Run folder: parent of checkpoints, exports and predictions; default "
      "<checkpoint_dir>, else runs/<experiment_name>, else runs/<dataset>.")
  checkpoint_dir: Optional[str] = flag(
      None, "Checkpoints (resumed automatically); default <model_dir>/checkpoints.")
  checkpoint_every: int = flag(1000, "Steps between checkpoints.", check=POSITIVE)
  max_checkpoints_to_keep: int = flag(3, "Checkpoints kept.", check=POSITIVE)
  checkpoint_input_pipeline: bool = flag(
      True, "One replica: save the tf.data iterator in checkpoints so a resume continues the "
      "exact data stream (costs the shuffle buffer's size on disk); otherwise a resume re-seeds "
      "the pipeline by step.")
  log_every: int = flag(50, "Steps between console/TensorBoard loss logs, at every multiple "
                        "of it; each shows the mean loss over the steps since the last.",
                        check=POSITIVE)
  image_summary_every: int = flag(
      1000, "Steps between TensorBoard images (input, ground truth, prediction).", check=POSITIVE)
  tensorboard_dir: Optional[str] = flag(None, "TensorBoard logs; default <checkpoint_dir>/tb.")
  seed: int = flag(0, "Seed of Python, numpy, TF, Keras and the input pipeline.")
  deterministic: bool = flag(
      False, "Deterministic ops (tf.config.experimental.enable_op_determinism): two runs give "
      "identical weights, at some speed cost.")
  backbone_weights: Optional[str] = flag(
      None, "Pretrained backbone weights: a file (.h5, .weights.h5, .safetensors, .pth), 'iseg' "
      "(the original's published ImageNet weights of --backbone, downloaded once), "
      "'iseg:<file>' (another published file) or 'none' (random, on purpose).")
  weights_cache_dir: Optional[str] = flag(
      None, "Where --backbone_weights=iseg downloads go (<dir>/models/, keras.utils.get_file's "
      "layout; may be gs://, shared by all hosts); default $KERAS_HOME or ~/.keras.")
  allow_partial_weights: bool = flag(
      False, "Skip (and list) backbone variables missing from --backbone_weights.")
  pretrain_steps: int = flag(
      0, "Steps of backbone pretraining on built-in shape classification (hfgd_tf/pretrain.py, "
      "the paper's ImageNet stage in miniature), written to <model_dir>/pretrain/<backbone>"
      ".weights.h5; mode=train then starts from them (a resumed run skips it); 0: none.",
      check=NON_NEGATIVE)
  eval_every: int = flag(0, "Steps between single-scale evaluations; 0: none.",
                         check=NON_NEGATIVE)
  bn_recalibration_batches: int = flag(
      0, "After training, recompute the batch-norm moving statistics as the average of this many "
      "training batches' statistics (for runs too short for --bn_momentum to forget its initial "
      "values); 0: keep them, and warn when they are stale.", check=NON_NEGATIVE)
  eval_after_train: bool = flag(True, "mode=train: evaluate once training ends.")


@dataclasses.dataclass(kw_only=True)
class RunSettings:
  """Everything a run needs, resolved from the flags and checked against each other; the mode
  runners (hfgd_tf/runs.py) read nothing else."""
  model: ModelConfig = not_a_flag()
  train: TrainConfig = not_a_flag()
  eval: EvalConfig = not_a_flag()
  dataset_info: object = not_a_flag()  # datasets.core.DatasetInfo
  mode: str = flag("train", "What to run.", choices=MODES)
  experiment_name: Optional[str] = flag(
      None, "Name of the run; default: the stem of the first --flagfile on the command line "
      "(e.g. hfgd-os4_r50_bs16-30k_pascal-context-59-513).")
  export_dir: Optional[str] = flag(
      None, "Export folder, TF Serving's model base path; default <model_dir>/export.")
  export_format: str = flag(
      "saved_model", "What mode=export (and --export_after_train) writes: saved_model "
      "(<export_dir>/<export_version>/, for TF Serving and TensorFlow), tflite (<export_dir>/"
      "tflite/, LiteRT, single scale) or onnx (<export_dir>/onnx/, with the eval protocol); "
      "docs/serving.md.", choices=EXPORT_FORMATS)
  export_input: str = flag(
      "both", "SavedModel input: image_tensor (uint8 images), image_bytes (JPEG/PNG strings, "
      "as TF Serving's REST API carries them in {\"b64\": ...}), or both (the encoded-image "
      "signatures then named image_bytes and image_bytes_probabilities).", choices=EXPORT_INPUTS)
  export_version: int = flag(
      1, "SavedModel: the version folder under --export_dir (TF Serving serves the highest; "
      "export a new model under a higher number to roll it out).", check=POSITIVE)
  export_height: Optional[int] = flag(
      None, "tflite/onnx: the fixed input height (saved_model: the warm-up request's); default "
      "--eval_height.", check=POSITIVE)
  export_width: Optional[int] = flag(
      None, "tflite/onnx: the fixed input width (saved_model: the warm-up request's); default "
      "--eval_width.", check=POSITIVE)
  export_tflite_types: Tuple[str, ...] = flag(
      TFLITE_TYPES, "tflite: the weight types, one file each: float32, float16, int8 (dynamic "
      "range: int8 weights, activations quantised on the fly).", kind="list",
      parse=_parse_tflite_types)
  export_overwrite: bool = flag(
      False, "Replace an existing export (version folder, tflite/ or onnx/) once the new one is "
      "complete.")
  export_after_train: bool = flag(False, "mode=train: export (--export_format) at the end.")
  predict_input: Optional[str] = flag(None, "Images to predict: a folder or a glob.")
  predict_output_dir: Optional[str] = flag(
      None, "Colourised predictions; default <model_dir>/predictions.")
  predict_after_train: bool = flag(
      False, "mode=train: write colourised predictions of the eval split at the end.")
  benchmark_steps: int = flag(3, "mode=benchmark: timed steps per model and round.",
                              check=POSITIVE)
  benchmark_rounds: int = flag(
      7, "mode=benchmark: rounds of interleaved timing (the report gives the median and range of "
      "the per-round ratios).", check=POSITIVE)
  benchmark_batch_size: int = flag(
      2, "mode=benchmark: batch of the timed train and inference steps (not --batch_size: a "
      "recipe's 16 at 513^2 needs ~23 GB on CPU).", check=POSITIVE)
  benchmark_memory: bool = flag(
      True, "mode=benchmark: also measure each model's peak memory in its own process.")
  flops_height: int = flag(513, "Input height of the FLOPs count.", check=POSITIVE)
  flops_width: int = flag(513, "Input width of the FLOPs count.", check=POSITIVE)
  flops_backbones: Tuple[str, ...] = flag(
      (), "mode=flops: count these backbones alone (with a 1000-way classifier, at flops_height, "
      "against their published figures) instead of the model.", kind="list", parse=tuple)

  @property
  def flops_size(self):
    return self.flops_height, self.flops_width

  @property
  def export_size(self):
    """(height, width) of the fixed-size exports: --export_height/width, else the eval size."""
    return (self.export_height or self.eval.eval_height, self.export_width or self.eval.eval_width)
