"""Training: a custom loop with a compiled train step on any tf.distribute strategy.

What it reproduces from the original (reference §1.3, §7), on Keras 3:
  * the batch size is global; each replica gets batch / num_replicas examples;
  * loss per replica = CE over all pixels of its local batch (ignored ones counted in the mean) +
    weighted CAE CE + CAR terms + L2, divided by num_replicas; gradients are summed across replicas
    (Keras 2's aggregation);
  * SGD momentum 0.9 with an L2 penalty wd * sum(w^2) on every conv/dense kernel (or the head's
    only, as Keras 2 effectively did), or AdamW with decoupled decay, skipping biases, norm layers,
    position tables and the patch embedding; poly decay (power 0.9) to the end LR over the run,
    optionally after a linear warm-up; optional layer-wise LR decay for the backbone;
  * synchronized BN when there is more than one replica, plain BN on one;
  * mixed precision float16 (dynamic loss scaling) or bfloat16, set before the model is built.

Checkpoints (model, optimizer slots and iterations, step and, by default, the tf.data iterator)
are written every `checkpoint_every` steps and restored automatically, so a killed run loses at
most the steps since its last checkpoint and a resumed deterministic run ends with the same
weights as an uninterrupted one. Only a plain tf.data iterator can be checkpointed (TF's
distributed iterators cannot), so the data position is saved on one replica; with several replicas
(or with checkpoint_input_pipeline off) a resumed run re-seeds its input pipeline with seed + step:
the data stream then differs from the uninterrupted run's. Multi-worker and TPU runs also save on
preemption (tf.distribute.experimental.PreemptionCheckpointHandler). A non-finite loss stops
training before anything is saved.
"""

import dataclasses
import math
import os
import random
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from hfgd_tf import bn_statistics, evaluation, input_pipeline, summaries, visualize
from hfgd_tf.backbones.layer_decay import layer_depths, num_depths
from hfgd_tf.backbones.weights import load_backbone_weights
from hfgd_tf.checkpoints import model_state, optimizer_state, restore_model_weights
from hfgd_tf.distribution import is_chief, worker_dir
from hfgd_tf.losses import segmentation_losses
from hfgd_tf.model import build_model
from hfgd_tf.run_config import FlagError

# AdamW never decays variables whose path contains one of these (the original's list), nor any
# variable of a normalisation layer.
NO_DECAY_SUBSTRINGS = ("bias", "relative_position_bias_table", "pos", "patch_embed", "class_token")
# Where a checkpoint keeps the tf.data iterator state and the step.
_ITERATOR_KEY = "iterator/.ATTRIBUTES/ITERATOR_STATE"
_STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"


class TrainingDivergedError(RuntimeError):
  """The loss became NaN or Inf; the message names the step, the terms and the last checkpoint."""


def set_seeds(seed, deterministic):
  """Seeds Python, numpy, TF and Keras; with `deterministic`, also makes every op deterministic."""
  os.environ["PYTHONHASHSEED"] = str(seed)
  random.seed(seed)
  np.random.seed(seed)
  keras.utils.set_random_seed(seed)
  if deterministic:
    tf.config.experimental.enable_op_determinism()


def set_precision(mixed_precision):
  """Global Keras dtype policy; must run before the model is built."""
  policy = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
  keras.mixed_precision.set_global_policy(policy[mixed_precision])


@keras.saving.register_keras_serializable("hfgd_tf")
class WarmUpPolyDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0 to `initial` over `warmup_steps`, then poly decay to `end` over the
  remaining steps: lr(t) = (initial - end) * (1 - (t - W) / (T - W)) ** power + end."""

  def __init__(self, initial, total_steps, end=0.0, power=0.9, warmup_steps=0):
    self.initial, self.total_steps, self.end = initial, total_steps, end
    self.power, self.warmup_steps = power, warmup_steps
    self.poly = keras.optimizers.schedules.PolynomialDecay(
        initial, total_steps - warmup_steps, end, power=power)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = float(max(self.warmup_steps, 1))
    return tf.where(step < self.warmup_steps, self.initial * step / warmup,
                    self.poly(tf.maximum(step - self.warmup_steps, 0.0)))

  def get_config(self):
    return dict(initial=self.initial, total_steps=self.total_steps, end=self.end, power=self.power,
                warmup_steps=self.warmup_steps)


def learning_rate_schedule(train):
  if train.warmup_steps:
    return WarmUpPolyDecay(train.learning_rate, train.train_steps, train.end_learning_rate,
                           train.poly_power, train.warmup_steps)
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


def l2_variables(model, head_only=False):
  """The kernels the SGD recipe's L2 penalty covers: every conv/dense kernel, or the head's."""
  skip = {id(variable) for variable in model.backbone.weights} if head_only else set()
  return [variable for variable in model.trainable_variables
          if variable.name.endswith("kernel") and id(variable) not in skip]


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


class Trainer:
  """Builds the model, optimizer, input pipeline and checkpoint on a strategy, and trains.

  Usage: Trainer(model_config, train_config, strategy).train() -> dict of final metrics.
  `validation` (optional, e.g. a `PeriodicEval`) has `evaluate(model) -> dict of metrics`, run
  every `eval_every` steps, and `sample(model) -> (images, labels, predictions)` for TensorBoard.
  """

  def __init__(self, model_config, train, strategy, palette=None, validation=None):
    self.train_config = train
    self.strategy = strategy
    self.num_replicas = strategy.num_replicas_in_sync
    if train.batch_size % self.num_replicas:
      raise FlagError(f"--batch_size: {train.batch_size} does not split evenly over "
                       f"{self.num_replicas} replicas")
    if train.bn_recalibration_batches and self.num_replicas > 1:
      raise FlagError(f"--bn_recalibration_batches: needs one replica, not {self.num_replicas}")
    self.model_config = dataclasses.replace(model_config, sync_batch_norm=self.num_replicas > 1)
    self.palette = palette
    self.validation = validation
    self.chief = is_chief(strategy)

    set_precision(train.mixed_precision)
    with strategy.scope():
      self.model = build_model(self.model_config)
      if train.backbone_weights:
        load_backbone_weights(self.model.backbone, train.backbone_weights,
                              allow_partial=train.allow_partial_weights)
      self.optimizer = build_optimizer(train, self.model)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self._l2 = (l2_variables(self.model, train.weight_decay_head_only)
                if train.optimizer == "sgd" and train.weight_decay > 0 else [])

    self._checkpoint_dir = worker_dir(strategy, train.checkpoint_dir)
    # Only a plain tf.data iterator is checkpointable (distributed iterators are not), so the data
    # position is saved on one device and re-seeded by step on several.
    self._save_iterator = train.checkpoint_input_pipeline and self.num_replicas == 1 and not (
        isinstance(strategy, tf.distribute.TPUStrategy))
    # Every worker resumes from the chief's checkpoints (a shared file system), and saves to its own
    # folder: only the chief's are kept, but saving a distributed checkpoint is collective.
    latest = tf.train.latest_checkpoint(train.checkpoint_dir)
    start = int(tf.train.load_checkpoint(latest).get_tensor(_STEP_KEY)) if latest else 0
    resume_data = self._save_iterator and (latest is None or _ITERATOR_KEY in {
        name for name, _ in tf.train.list_variables(latest)})
    # Without a saved iterator, a resumed run continues with a fresh stream seeded by the step.
    data_seed = train.seed if (start == 0 or resume_data) else train.seed + start
    if self._save_iterator:
      self.iterator = iter(self._dataset(None, data_seed))
    else:
      self.iterator = iter(strategy.distribute_datasets_from_function(
          lambda context: self._dataset(context, data_seed)))
    state = dict(model=model_state(self.model), optimizer=optimizer_state(self.optimizer),
                 step=self.step)
    if resume_data:
      state["iterator"] = self.iterator
    if latest:
      # Every variable must come back: a checkpoint of another model or optimizer is an error.
      tf.train.Checkpoint(**state).read(latest).assert_existing_objects_matched()
      logging.info("Resumed from %s at step %d%s.", latest, int(self.step.numpy()),
                   "" if resume_data else f" (input pipeline re-seeded with {data_seed})")
    if self._save_iterator:
      state["iterator"] = self.iterator
    self.checkpoint = tf.train.Checkpoint(**state)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, self._checkpoint_dir, max_to_keep=train.max_checkpoints_to_keep,
        step_counter=self.step)
    self._train_step = tf.function(self._distributed_step)
    # Multi-worker and TPU jobs are preemptible: TF's handler saves a checkpoint through the
    # manager when the cluster is told to terminate, and the next run resumes from it.
    self._preemption = None
    if isinstance(strategy, (tf.distribute.MultiWorkerMirroredStrategy,
                             tf.distribute.TPUStrategy)):
      self._preemption = tf.distribute.experimental.PreemptionCheckpointHandler(
          strategy.cluster_resolver, self.manager)

  def _dataset(self, input_context, seed):
    train = self.train_config
    pattern = os.path.join(train.data_dir, f"{train.train_split}-*.tfrecord")
    return input_pipeline.train_dataset(
        pattern, train.batch_size, train.augment, seed=seed, input_context=input_context,
        shuffle_buffer=train.shuffle_buffer, validate_labels=train.validate_labels,
        num_classes=self.model_config.num_classes)

  def _replica_step(self, images, labels):
    variables = self.model.trainable_variables
    with tf.GradientTape() as tape:
      outputs = self.model({"image": images, "label": labels}, training=True)
      total, terms = segmentation_losses(outputs, labels, self.model_config)
      if self._l2:
        terms["l2"] = self.train_config.weight_decay * tf.add_n(
            [tf.reduce_sum(tf.square(tf.cast(variable.value, tf.float32)))
             for variable in self._l2])
        total += terms["l2"]
      # Keras 2's aggregation: each replica's loss / replicas, gradients summed over replicas.
      loss = total / self.num_replicas
      scaled_loss = self.optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, variables)
    self.optimizer.apply_gradients(zip(gradients, variables))
    terms = {name: value / self.num_replicas for name, value in terms.items()}
    return loss, terms

  def _distributed_step(self, iterator):
    images, labels = next(iterator)
    loss, terms = self.strategy.run(self._replica_step, args=(images, labels))
    self.step.assign_add(1)
    reduce = lambda value: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
    return reduce(loss), {name: reduce(value) for name, value in terms.items()}

  def save(self):
    path = self.manager.save(checkpoint_number=self.step)
    if self.chief:
      logging.info("Saved checkpoint %s.", path)

  def train(self):
    """Trains up to `train_steps` (from wherever the checkpoint left off); returns final metrics."""
    train = self.train_config
    start = int(self.step.numpy())
    if start >= train.train_steps:
      logging.info("Already trained %d of %d steps.", start, train.train_steps)
      return {"step": start}
    writer = (tf.summary.create_file_writer(train.tensorboard_dir) if self.chief
              else tf.summary.create_noop_writer())
    logging.info("Training steps %d..%d on %d replica(s), global batch %d, %s.", start + 1,
                 train.train_steps, self.num_replicas, train.batch_size, train.mixed_precision)
    results, first_loss, loss = {}, None, None
    window_start, window_steps = time.time(), 0
    with writer.as_default():
      for step in range(start + 1, train.train_steps + 1):
        if self._preemption is None:
          loss, terms = self._train_step(self.iterator)
        else:
          loss, terms = self._preemption.run(self._train_step, self.iterator)
        loss = float(loss)
        terms = {name: float(value) for name, value in terms.items()}
        if not math.isfinite(loss):
          raise TrainingDivergedError(
              f"loss is {loss} at step {step} (terms: "
              + ", ".join(f"{name}={value:.4g}" for name, value in terms.items())
              + f"); stopped without saving. Last good checkpoint: "
              f"{self.manager.latest_checkpoint or 'none'}. Lower --learning_rate or check data.")
        first_loss = loss if first_loss is None else first_loss
        window_steps += 1
        if step % train.log_every == 0 or step == train.train_steps:
          rate = window_steps / max(time.time() - window_start, 1e-9)
          self._log(step, loss, terms, rate)
          window_start, window_steps = time.time(), 0
        if step % train.image_summary_every == 0 and self.validation is not None:
          self._write_images(step)
        if step == train.train_steps:  # before the last checkpoint, which keeps the statistics
          bn_statistics.finish_training(
              self.model, train.train_steps, train.bn_recalibration_batches,
              lambda: self._dataset(None, train.seed + train.train_steps))
        if step % train.checkpoint_every == 0 or step == train.train_steps:
          self.save()
        if train.eval_every and step % train.eval_every == 0 and self.validation is not None:
          results = self._evaluate(step)
      writer.flush()
    results.update(step=int(self.step.numpy()), first_loss=first_loss, last_loss=loss)
    return results

  def _log(self, step, loss, terms, steps_per_second):
    train = self.train_config
    remaining = (train.train_steps - step) / max(steps_per_second, 1e-9)
    learning_rate = current_learning_rate(self.optimizer)
    logging.info("step %d/%d  loss %.4f (%s)  lr %.3g  %.2f steps/s  ETA %s", step,
                 train.train_steps, loss,
                 " ".join(f"{name} {value:.4f}" for name, value in terms.items()), learning_rate,
                 steps_per_second, time.strftime("%H:%M:%S", time.gmtime(remaining)))
    summaries.scalar("loss/total", loss, step=step)
    for name, value in terms.items():
      summaries.scalar(f"loss/{name}", value, step=step)
    summaries.scalar("learning_rate", learning_rate, step=step)
    summaries.scalar("steps_per_second", steps_per_second, step=step)

  def _evaluate(self, step):
    results = self.validation.evaluate(self.model)
    for name, value in results.items():
      if np.ndim(value) == 0:
        summaries.scalar(f"eval/{name}", value, step=step)
    logging.info("step %d  eval: %s", step, ", ".join(
        f"{name} {value:.4f}" for name, value in results.items() if np.ndim(value) == 0))
    return results

  def _write_images(self, step):
    images, labels, predictions = self.validation.sample(self.model)
    summaries.image("images/input", (images + 1.0) / 2.0, step)
    summaries.image("images/ground_truth", visualize.colorize(labels.numpy(), self.palette), step)
    summaries.image("images/prediction", visualize.colorize(predictions.numpy(), self.palette),
                    step)


class PeriodicEval:
  """Evaluation during training: single-scale mIoU on the eval split (hfgd_tf.evaluation), and a
  few predictions for TensorBoard."""

  def __init__(self, file_pattern, num_classes, eval_height, eval_width, batch_size,
               max_examples=None, ignore_label=input_pipeline.IGNORE_LABEL):
    self.num_classes = num_classes
    self.ignore_label = ignore_label
    self.dataset = input_pipeline.eval_dataset(
        file_pattern, batch_size, eval_height, eval_width, ignore_label=ignore_label)
    if max_examples:
      self.dataset = self.dataset.take(math.ceil(max_examples / batch_size))
    self._predict = tf.function(lambda model, images: tf.argmax(
        model(images, training=False), -1, output_type=tf.int32))

  def evaluate(self, model):
    """{"miou", "pixel_accuracy"} over the eval split (padding and ignored pixels excluded)."""
    results = evaluation.evaluate(model, self.dataset, self.num_classes,
                                  ignore_label=self.ignore_label, log_every=0)
    return {"miou": results.mean_iou, "pixel_accuracy": results.pixel_accuracy}

  def sample(self, model, count=4):
    """(images [n, H, W, 3] in [-1, 1], labels [n, H, W], predictions [n, H, W]) of the first
    eval batch."""
    batch = next(iter(self.dataset))
    images, labels = batch["image"][:count], batch["label"][:count]
    return images, labels, self._predict(model, images)


def restore_model(model_config, checkpoint_dir):
  """The model of the latest checkpoint in `checkpoint_dir` (weights only; plain BN)."""
  if tf.train.latest_checkpoint(checkpoint_dir) is None:
    raise FlagError(f"--checkpoint_dir: no checkpoint in {checkpoint_dir}")
  model = build_model(dataclasses.replace(model_config, sync_batch_norm=False))
  restore_model_weights(model, checkpoint_dir)
  return model
