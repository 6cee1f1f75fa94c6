"""Optimisation as the original's recipes: learning-rate schedules, optimizers, weight decay.

  * SGD momentum 0.9 with an L2 penalty wd * sum(w^2) on the kernels the original penalised (or
    the head's, or all) — the trainer adds the penalty to the loss (`l2_variables`);
  * AdamW with decoupled decay, skipping biases, norm layers, position tables and the patch
    embedding (`no_weight_decay_variables`);
  * poly decay (power 0.9) to the end LR over the run, optionally after a linear warm-up;
  * optional layer-wise LR decay of the backbone (per-variable LR multipliers);
  * dynamic loss scaling under float16.
"""

import keras
import tensorflow as tf

from hfgd_tf.config import WARMUP_SCHEDULES, WEIGHT_DECAY_SCOPES
from hfgd_tf.modeling.backbones.layer_decay import layer_depths, num_depths

# AdamW never decays variables whose path contains one of these (the original's list), nor any
# variable of a normalisation layer.
NO_DECAY_SUBSTRINGS = ("bias", "relative_position_bias_table", "pos", "patch_embed", "class_token")


@keras.saving.register_keras_serializable("hfgd_tf")
class WarmUpPolyDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0 to `initial` over W = `warmup_steps`, then poly decay (power p).

  "decay_to_end" (ours): lr(t) = (initial - end) * (1 - (t - W) / (T - W)) ** p + end, reaching
  `end` at T = `total_steps`.
  "original" (iSeg's WarmUpPolyDecay of the HFGD era, reference 7.3): the step is clipped at T - W
  before W is subtracted, so lr(t) = (initial - end) * (1 - (min(t, T - W) - W) / (T - W)) ** p
  + end never reaches `end`: it freezes at (initial - end) * (W / (T - W)) ** p + end from step
  T - W on (W = 1500, T = 30000, initial 0.01: 7.0652e-4 from step 28500).
  """

  def __init__(self, initial, total_steps, end=0.0, power=0.9, warmup_steps=0,
               schedule="decay_to_end"):
    if schedule not in WARMUP_SCHEDULES:
      raise ValueError(f"warm-up schedule {schedule!r} is not one of "
                       f"{', '.join(WARMUP_SCHEDULES)}")
    self.initial, self.total_steps, self.end = initial, total_steps, end
    self.power, self.warmup_steps, self.schedule = power, warmup_steps, schedule
    self.poly = keras.optimizers.schedules.PolynomialDecay(
        initial, total_steps - warmup_steps, end, power=power)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = float(max(self.warmup_steps, 1))
    decay_step = step
    if self.schedule == "original":
      decay_step = tf.minimum(step, float(self.total_steps - self.warmup_steps))
    return tf.where(step < self.warmup_steps, self.initial * step / warmup,
                    self.poly(tf.maximum(decay_step - self.warmup_steps, 0.0)))

  def get_config(self):
    return dict(initial=self.initial, total_steps=self.total_steps, end=self.end, power=self.power,
                warmup_steps=self.warmup_steps, schedule=self.schedule)


def learning_rate_schedule(train):
  """Poly decay over `train_steps`; with warm-up, a WarmUpPolyDecay of `train.warmup_schedule`."""
  if train.warmup_steps:
    return WarmUpPolyDecay(train.learning_rate, train.train_steps, train.end_learning_rate,
                           train.poly_power, train.warmup_steps, train.warmup_schedule)
  return keras.optimizers.schedules.PolynomialDecay(
      train.learning_rate, train.train_steps, train.end_learning_rate, power=train.poly_power)


def _norm_layer_variables(model):
  return [variable for layer in model._flatten_layers()  # pylint: disable=protected-access
          if type(layer).__name__.endswith(("Normalization", "Norm"))
          for variable in layer.weights]


def no_weight_decay_variables(model):
  """Variables AdamW must not decay: biases, norm layers, position tables, patch embedding."""
  excluded = {id(variable): variable for variable in _norm_layer_variables(model)}
  for variable in model.trainable_variables:
    if any(part in variable.path for part in NO_DECAY_SUBSTRINGS):
      excluded[id(variable)] = variable
  return list(excluded.values())


def _layers_in(value):
  """The layers of a sub-layer attribute: one layer, a list or dict of them (nested), or None."""
  if isinstance(value, keras.layers.Layer):
    return [value]
  if isinstance(value, dict):
    value = list(value.values())
  if isinstance(value, (list, tuple)):
    return [layer for item in value for layer in _layers_in(item)]
  return []


def late_built_variables(model):
  """Variables of the layers the original code creates inside some layer's `build()`.

  Each layer class names such sub-layers (attributes) in `original_late_sublayers`; their whole
  subtrees count. The original set its L2 regulariser on the layers that existed once the model
  was constructed, and Keras 2 honoured it only for weights created afterwards: a layer created in
  a build() did not exist then, so it was never penalised.
  """
  variables = {}
  for layer in model._flatten_layers():  # pylint: disable=protected-access
    for name in getattr(layer, "original_late_sublayers", ()):
      for late in _layers_in(getattr(layer, name, None)):
        variables.update((id(variable), variable) for variable in late.weights)
  return list(variables.values())


def l2_variables(model, train):
  """The kernels the SGD recipe's L2 penalty covers, by `train.weight_decay_scope`; none unless the
  optimizer is SGD with a weight decay.

    all       every conv/dense kernel (depthwise ones included), as Keras 3 applies a regulariser;
    head      every kernel outside the backbone;
    original  the kernels the original code penalised: the head's, less those of layers it creates
              inside a build() (`late_built_variables`). Its backbone was built (and its weights
              loaded) before the regulariser was set, so it escaped too. docs/training.md lists
              the result per model.
  """
  if train.weight_decay_scope not in WEIGHT_DECAY_SCOPES:
    raise ValueError(f"weight decay scope {train.weight_decay_scope!r} is not one of "
                     f"{', '.join(WEIGHT_DECAY_SCOPES)}")
  if train.optimizer != "sgd" or train.weight_decay <= 0:
    return []
  kernels = [variable for variable in model.trainable_variables
             if variable.name.endswith("kernel")]
  if train.weight_decay_scope == "all":
    return kernels
  skip = {id(variable) for variable in model.backbone.weights}
  if train.weight_decay_scope == "original":
    skip.update(id(variable) for variable in late_built_variables(model))
  return [variable for variable in kernels if id(variable) not in skip]


class _LayerwiseLearningRate:
  """Mixin scaling each variable's learning rate by a fixed multiplier (layer-wise LR decay)."""

  def set_lr_multipliers(self, multipliers):
    """multipliers: one float per variable, in the order `build` receives the variables."""
    self._lr_multipliers = list(multipliers)  # pylint: disable=attribute-defined-outside-init

  def update_step(self, gradient, variable, learning_rate):
    multiplier = self._lr_multipliers[self._get_variable_index(variable)]
    return super().update_step(gradient, variable, learning_rate * multiplier)


class LayerwiseSGD(_LayerwiseLearningRate, keras.optimizers.SGD):
  """SGD with per-variable learning-rate multipliers."""


class LayerwiseAdamW(_LayerwiseLearningRate, keras.optimizers.AdamW):
  """AdamW with per-variable learning-rate multipliers."""


def layerwise_multipliers(model, decay):
  """decay ** (L - depth) for backbone variables (depths from the backbone), 1 for the head."""
  depths = layer_depths(model.backbone)
  deepest = num_depths(model.backbone)
  backbone_ids = {id(variable) for variable in model.backbone.weights}
  return [decay ** (deepest - depths[variable.path]) if id(variable) in backbone_ids else 1.0
          for variable in model.trainable_variables]


def build_optimizer(train, model):
  """The recipe's optimizer for `model`, built (slots created) for its trainable variables.

  Fixed names keep its variable paths, hence its checkpoint keys, the same in every process.

  Call inside the strategy scope, before the first distributed step.
  """
  schedule = learning_rate_schedule(train)
  layerwise = train.layerwise_lr_decay is not None and train.layerwise_lr_decay != 1.0
  if train.optimizer == "sgd":
    cls = LayerwiseSGD if layerwise else keras.optimizers.SGD
    optimizer = cls(learning_rate=schedule, momentum=train.momentum, name="sgd")
  else:
    cls = LayerwiseAdamW if layerwise else keras.optimizers.AdamW
    optimizer = cls(learning_rate=schedule, weight_decay=train.adamw_weight_decay, name="adamw")
    optimizer.exclude_from_weight_decay(var_list=no_weight_decay_variables(model))
  if layerwise:
    optimizer.set_lr_multipliers(layerwise_multipliers(model, train.layerwise_lr_decay))
  if train.mixed_precision == "float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name="loss_scale_optimizer")
  optimizer.build(model.trainable_variables)
  return optimizer


def current_learning_rate(optimizer):
  inner = getattr(optimizer, "inner_optimizer", optimizer)
  return float(inner.learning_rate)
