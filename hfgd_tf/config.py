"""Every configuration of a run, as dataclasses the flags fill (hfgd_tf/flags.py):

  ModelConfig    what to build; each row of the paper's tables is one setting (see experiments/);
  AugmentConfig  the training augmentation;
  TrainConfig    data, optimisation, distribution, checkpoints;
  EvalConfig     the inference protocol;
  RunSettings    all of the above plus the mode's own settings, resolved and cross-checked.

Nothing here imports TensorFlow, so flags can be checked before anything is built.
"""

import dataclasses
from typing import Optional, Tuple

import numpy as np

# The label of unlabelled pixels, in every dataset, record, loss and metric.
IGNORE_LABEL = 255
# Batch-norm defaults of the original codebase: momentum 0.9997 (paper, Sec. 4) everywhere, and
# Keras' default epsilon 1e-3, which the original never overrode for heads.
BN_MOMENTUM = 0.9997
HEAD_BN_EPSILON = 1e-3


# Poly decay after a warm-up: ours reaches the end LR at the last step; iSeg's freezes
# (optimization.py).
WARMUP_SCHEDULES = ("decay_to_end", "original")
# XLA for the train/eval steps: auto = on for GPUs and TPUs, off on CPUs (distribution.py).
JIT_COMPILE = ("auto", "on", "off")


class FlagError(ValueError):
  """A flag value that cannot work; the message starts with --<flag>: and says why."""


@dataclasses.dataclass
class AugmentConfig:
  """Training augmentation; defaults are the HFGD-era iDS ones at crop 513.

  Set min_scale = max_scale = 1 to switch random scaling off.
  """
  crop_height: int = 513
  crop_width: int = 513
  min_scale: float = 0.5
  max_scale: float = 2.0
  scale_step: float = 0.25
  random_brightness: bool = True
  photometric_distortion: bool = False
  flip: bool = True
  ignore_label: int = IGNORE_LABEL

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
  num_classes: int = 59
  ignore_label: int = IGNORE_LABEL

  # Backbone (hfgd_tf/modeling/backbones): name, output stride (8/16 = dilated), stochastic depth.
  backbone: str = "resnet50"
  backbone_output_stride: int = 32
  drop_path_rate: Optional[float] = None

  # Context encoder at the backbone's deepest level (Table 1): identity, aspp, ocr, sa (plain
  # self-attention, the NL head), sa_car (the CAR paper's SA + CAR head, used at D8) or cae (ours).
  encoder: str = "cae"
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
  decoder: str = "usfpn"
  decoder_output_stride: int = 4
  decoder_filters: int = 256

  # HFGM: stop-gradients on the decoder's inputs, the decoder classified by the encoder's class
  # kernels under stop-gradient, and (optionally) an axial-attention layer before them.
  hfgm: bool = True
  hfgm_axial_attention: bool = True
  axial_attention_heads: int = 4

  # Normalisation and resizing.
  # sync_batch_norm is set by the trainer: on with more than one replica.
  sync_batch_norm: bool = False
  bn_momentum: float = BN_MOMENTUM
  head_bn_epsilon: float = HEAD_BN_EPSILON
  align_corners: bool = True

  # Loss weights: CE on the encoder's logits (HFGM's OS=32 path) and on OCR's auxiliary logits;
  # CE averaged over all pixels, ignored ones included (the original), or over valid pixels only.
  cae_loss_weight: float = 1.0
  aux_loss_weight: float = 0.4
  ce_average_valid_only: bool = False

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
  scales: Tuple[float, ...] = (1.0,)
  flip: bool = False
  sliding_window: Optional[Tuple[int, int]] = None
  batch_size: int = 8
  eval_height: int = 513
  eval_width: int = 513
  max_examples: Optional[int] = None
  jit_compile: str = "auto"


@dataclasses.dataclass
class TrainConfig:
  """How to train; see hfgd_tf/flags.py for what each field means."""
  dataset: str = "builtin"
  data_dir: Optional[str] = None
  builtin_num_train: int = 1000
  builtin_num_val: int = 200
  train_split: str = "train"
  eval_split: str = "val"
  augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
  shuffle_buffer: int = 1000
  validate_labels: bool = False

  batch_size: int = 16
  train_steps: int = 30000
  optimizer: str = "sgd"
  learning_rate: float = 0.01
  end_learning_rate: float = 0.0
  poly_power: float = 0.9
  warmup_steps: int = 0
  warmup_schedule: str = "decay_to_end"
  momentum: float = 0.9
  weight_decay: float = 1e-4
  weight_decay_head_only: bool = False
  adamw_weight_decay: float = 0.05
  layerwise_lr_decay: Optional[float] = None
  mixed_precision: str = "none"
  distribution: str = "one_device"
  tpu: Optional[str] = None
  # Where a multi_worker/tpu run finds its cluster: tf_config, slurm or tpu (distribution.py).
  cluster_resolver: Optional[str] = None
  slurm_port_base: int = 8888
  jit_compile: str = "auto"
  steps_per_loop: int = 1

  model_dir: Optional[str] = None
  checkpoint_dir: Optional[str] = None
  checkpoint_every: int = 1000
  max_checkpoints_to_keep: int = 3
  checkpoint_input_pipeline: bool = True
  log_every: int = 50
  image_summary_every: int = 1000
  tensorboard_dir: Optional[str] = None
  seed: int = 0
  deterministic: bool = False
  backbone_weights: Optional[str] = None
  allow_partial_weights: bool = False
  pretrain_steps: int = 0
  eval_every: int = 0
  bn_recalibration_batches: int = 0
  eval_after_train: bool = True


@dataclasses.dataclass
class RunSettings:
  """Everything a run needs, resolved from the flags and checked against each other; the mode
  runners (hfgd_tf/runs.py) read nothing else."""
  mode: str
  model: ModelConfig
  train: TrainConfig
  eval: EvalConfig
  dataset_info: object  # datasets.core.DatasetInfo
  export_dir: str
  export_overwrite: bool = False
  export_after_train: bool = False
  predict_input: Optional[str] = None
  predict_output_dir: Optional[str] = None
  predict_after_train: bool = False
  benchmark_steps: int = 3
  benchmark_rounds: int = 7
  benchmark_batch_size: int = 2
  benchmark_memory: bool = True
  flops_size: Tuple[int, int] = (513, 513)
  flops_backbones: Tuple[str, ...] = ()
