"""What a run does besides building the model: data, optimisation, distribution, checkpoints,
evaluation protocol and output paths. Filled from flags by `hfgd_tf.flags.run_config_from_flags`.

No TensorFlow import here, so flags can be validated before anything heavy starts.
"""

import dataclasses
from typing import Optional, Tuple

from hfgd_tf.config import AugmentConfig


class FlagError(ValueError):
  """A flag value that cannot work; the message starts with --<flag>: and says why."""


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


@dataclasses.dataclass
class TrainConfig:
  """How to train; see hfgd_tf/flags.py for what each field means."""
  dataset: str = "builtin"
  data_dir: Optional[str] = None
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
  momentum: float = 0.9
  weight_decay: float = 1e-4
  weight_decay_head_only: bool = False
  adamw_weight_decay: float = 0.05
  layerwise_lr_decay: Optional[float] = None
  mixed_precision: str = "none"
  distribution: str = "one_device"
  tpu: Optional[str] = None

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
  eval_every: int = 0
  bn_recalibration_batches: int = 0
  eval_after_train: bool = True
