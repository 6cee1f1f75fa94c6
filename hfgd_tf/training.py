"""Training: a custom loop with a compiled train step on any tf.distribute strategy.

What it reproduces from the original (reference §1.3, §7), on Keras 3:
  * the batch size is global; each replica gets batch / num_replicas examples;
  * loss per replica = CE over all pixels of its local batch (ignored ones counted in the mean) +
    weighted CAE CE + CAR terms + L2, divided by num_replicas; gradients are summed across replicas
    (Keras 2's aggregation);
  * the recipes' optimizers and schedules (hfgd_tf/optimization.py), the SGD recipe's L2 penalty
    added to the loss here;
  * synchronized BN when there is more than one replica, plain BN on one;
  * mixed precision float16 (dynamic loss scaling) or bfloat16, set before the model is built.

The step from the batch on is compiled with XLA under --jit_compile (the iterator stays outside;
with several replicas on a worker it is not: distribution.train_step_jit_compile);
--steps_per_loop=N runs N steps per call in a tf.range loop, ending early at any step that logs,
saves, evaluates or writes images.

Checkpoints (model, optimizer slots and iterations, step and, by default, the tf.data iterator)
are written every `checkpoint_every` steps and restored automatically, so a killed run loses at
most the steps since its last checkpoint and a resumed deterministic run ends with the same
weights as an uninterrupted one. Only a plain tf.data iterator can be checkpointed (TF's
distributed iterators cannot), so the data position is saved on one replica; with several replicas
(or with checkpoint_input_pipeline off) a resumed run re-seeds its input pipeline with seed + step:
the data stream then differs from the uninterrupted run's. On every strategy, SIGTERM or SIGINT
(preemption, eviction, Ctrl-C) saves a checkpoint after the step or loop running when it came and
exits with code 42 (hfgd_tf/preemption.py). A non-finite loss stops training before anything is
saved.
"""

import dataclasses
import math
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from hfgd_tf import bn_statistics, summaries, visualize
from hfgd_tf.checkpoints import latest_resume_point, model_state, optimizer_state
from hfgd_tf.config import IGNORE_LABEL, FlagError
from hfgd_tf.data import pipeline
from hfgd_tf.distribution import is_chief, train_step_jit_compile, worker_dir
from hfgd_tf.modeling.backbones.pretrained import load_pretrained
from hfgd_tf.modeling.losses import segmentation_losses
from hfgd_tf.modeling.model import build_model
from hfgd_tf.ops import denormalize_image
from hfgd_tf.optimization import build_optimizer, current_learning_rate, l2_variables
from hfgd_tf.precision import prepare_numerics
from hfgd_tf.preemption import PREEMPTED_EXIT_CODE, SignalWatch, TrainingPreempted



class TrainingDivergedError(RuntimeError):
  """The loss became NaN or Inf; the message names the step, the terms and the last checkpoint."""


def replica_step(model, optimizer, model_config, images, labels, num_replicas=1, l2=(),
                 weight_decay=0.0):
  """One training step on one replica's batch: forward, losses (+ weight_decay * sum(w^2) over
  `l2`), gradients, update. Returns (loss, {term: value}), both divided by `num_replicas`.

  Keras 2's aggregation: each replica's loss / replicas, gradients summed over replicas.
  """
  variables = model.trainable_variables
  with tf.GradientTape() as tape:
    outputs = model({"image": images, "label": labels}, training=True)
    total, terms = segmentation_losses(outputs, labels, model_config)
    if l2:
      terms["l2"] = weight_decay * tf.add_n(
          [tf.reduce_sum(tf.square(tf.cast(variable.value, tf.float32))) for variable in l2])
      total += terms["l2"]
    loss = total / num_replicas
    scaled_loss = optimizer.scale_loss(loss)
  gradients = tape.gradient(scaled_loss, variables)
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    gradients = non_finite_on_every_replica(gradients)
  optimizer.apply_gradients(zip(gradients, variables))
  return loss, {name: value / num_replicas for name, value in terms.items()}


def non_finite_on_every_replica(gradients):
  """`gradients`, made all NaN on every replica (and worker) when any replica's are not finite.

  Keras' LossScaleOptimizer decides whether to skip a step, and halve the scale, from the first
  replica's gradients before they are summed: an overflow on another replica alone would reach
  the weights as inf. A one-number all-reduce shares the verdict, so every replica skips together.
  """
  context = tf.distribute.get_replica_context()
  if context.num_replicas_in_sync == 1:
    return gradients
  # Dense (a gather's IndexedSlices, e.g. Swin's position-bias table, cannot be multiplied).
  gradients = [None if gradient is None else tf.convert_to_tensor(gradient)
               for gradient in gradients]
  finite = tf.reduce_all(tf.stack(
      [tf.reduce_all(tf.math.is_finite(gradient)) for gradient in gradients
       if gradient is not None]))
  overflows = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                 tf.cast(tf.logical_not(finite), tf.float32))
  factor = tf.where(overflows > 0, np.nan, 1.0)  # x * 1.0 is exact
  return [None if gradient is None else gradient * tf.cast(factor, gradient.dtype)
          for gradient in gradients]


def format_duration(seconds):
  """"HH:MM:SS" below a day, "Nd HH:MM:SS" from one day on (e.g. "1d 12:00:00")."""
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  days, hours = divmod(hours, 24)
  clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
  return f"{days}d {clock}" if days else clock


class Trainer:
  """Builds the model, optimizer, input pipeline and checkpoint on a strategy, and trains.

  Usage: Trainer(model_config, train_config, strategy).train() -> dict of final metrics.
  `ids_ignore_label` is the dataset's ignore value in the authors' iDS records
  (`DatasetInfo.ids_ignore_label`: 0 for Pascal Context), mapped to the library's 255 when such
  records are read. `validation` (optional, e.g. a `PeriodicEval`) has `evaluate(model) -> dict
  of metrics`, run every `eval_every` steps, and `sample(model) -> (images, labels, predictions)`
  for TensorBoard.
  """

  def __init__(self, model_config, train, strategy, palette=None, validation=None,
               ids_ignore_label=IGNORE_LABEL, resume_point=None):
    """`resume_point`: `checkpoints.latest_resume_point(train.checkpoint_dir)` when the caller has
    already looked it up; otherwise the trainer looks it up (once)."""
    train = prepare_numerics(train, strategy)  # seeds and dtype policy, before the model is built
    self.train_config = train
    self.ids_ignore_label = ids_ignore_label
    self.strategy = strategy
    self.num_replicas = strategy.num_replicas_in_sync
    self._check_replicas()
    jit_compile = train_step_jit_compile(train.jit_compile, strategy, train.deterministic)
    self.model_config = dataclasses.replace(model_config, sync_batch_norm=self.num_replicas > 1)
    self.palette = palette
    self.validation = validation
    self.chief = is_chief(strategy)
    latest, start, saved_iterator = resume_point or latest_resume_point(train.checkpoint_dir)
    self._build(resuming=latest is not None)
    # Only a plain tf.data iterator is checkpointable (distributed iterators are not), so the data
    # position is saved on one device and re-seeded by step on several.
    self._save_iterator = train.checkpoint_input_pipeline and self.num_replicas == 1 and not (
        isinstance(strategy, tf.distribute.TPUStrategy))
    resume_data = self._save_iterator and (latest is None or saved_iterator)
    # Without a saved iterator, a resumed run continues with a fresh stream seeded by the step.
    data_seed = train.seed if (start == 0 or resume_data) else train.seed + start
    self.iterator = self._input_iterator(data_seed)
    self._restore_and_manage(latest, resume_data, data_seed)
    self._compile_steps(jit_compile)

  def _check_replicas(self):
    train = self.train_config
    if train.batch_size % self.num_replicas:
      raise FlagError(f"--batch_size: {train.batch_size} does not split evenly over "
                       f"{self.num_replicas} replicas")
    if train.bn_recalibration_batches and self.num_replicas > 1:
      raise FlagError(f"--bn_recalibration_batches: needs one replica, not {self.num_replicas}")

  def _build(self, resuming):
    """The model (pretrained backbone unless `resuming`: the checkpoint restores it), optimizer
    and step counter on the strategy, and the SGD recipe's L2 variables."""
    train = self.train_config
    with self.strategy.scope():
      self.model = build_model(self.model_config)
      if not resuming:
        load_pretrained(self.model.backbone, self.model_config.backbone, train,
                        record_dir=train.checkpoint_dir if self.chief else None)
      self.optimizer = build_optimizer(train, self.model)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self._l2 = l2_variables(self.model, train)

  def _input_iterator(self, seed):
    """A plain iterator when its position is checkpointed; else a distributed one."""
    if self._save_iterator:
      return iter(self._dataset(None, seed))
    return iter(self.strategy.distribute_datasets_from_function(
        lambda context: self._dataset(context, seed)))

  def _restore_and_manage(self, latest, resume_data, data_seed):
    """Restores checkpoint `latest` (if any; the iterator too when `resume_data`) and sets up the
    manager that saves to this worker's folder.

    Every worker resumes from the chief's checkpoints (a shared file system), and saves to its own
    folder: only the chief's are kept, but saving a distributed checkpoint is collective.
    """
    train = self.train_config
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
        self.checkpoint, worker_dir(self.strategy, train.checkpoint_dir),
        max_to_keep=train.max_checkpoints_to_keep, step_counter=self.step)
    self._saved_step = None

  def _compile_steps(self, jit_compile):
    """XLA compiles the step from the batch on (the iterator stays outside, as in Keras)."""
    self._compiled_step = tf.function(self._step_on_batch, jit_compile=jit_compile)
    self._train_step = tf.function(self._distributed_step)
    self._train_loop = tf.function(self._distributed_loop)

  def _dataset(self, input_context, seed):
    train = self.train_config
    source = pipeline.split_source(train.dataset, train.data_dir, train.train_split)
    return pipeline.train_dataset(
        source, train.batch_size, train.augment, seed=seed, input_context=input_context,
        shuffle_buffer=train.shuffle_buffer, validate_labels=train.validate_labels,
        num_classes=self.model_config.num_classes, ids_ignore_label=self.ids_ignore_label)

  def _replica_step(self, images, labels):
    return replica_step(self.model, self.optimizer, self.model_config, images, labels,
                        self.num_replicas, self._l2, self.train_config.weight_decay)

  def _step_on_batch(self, images, labels):
    loss, terms = self.strategy.run(self._replica_step, args=(images, labels))
    self.step.assign_add(1)
    reduce = lambda value: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
    return reduce(loss), {name: reduce(value) for name, value in terms.items()}

  def _distributed_step(self, iterator):
    images, labels = next(iterator)
    return self._compiled_step(images, labels)

  def _distributed_loop(self, iterator, steps):
    """`steps` (>= 1, a tensor: one trace for any count) training steps in one call, as TF Model
    Garden loops on TPUs where host round-trips dominate; returns the losses summed over them."""
    loss, terms = self._distributed_step(iterator)
    for _ in tf.range(steps - 1):
      step_loss, step_terms = self._distributed_step(iterator)
      loss += step_loss
      terms = {name: value + step_terms[name] for name, value in terms.items()}
    return loss, terms

  def _loop_length(self, done):
    """Steps the next call runs after `done` steps: up to `steps_per_loop`, ending at the next step
    that logs, saves, evaluates or writes images, so every cadence holds whatever its value."""
    train = self.train_config
    cadences = [train.log_every, train.checkpoint_every]
    if self.validation is not None:
      cadences += [train.image_summary_every] + ([train.eval_every] if train.eval_every else [])
    return min([train.steps_per_loop, train.train_steps - done]
               + [every - done % every for every in cadences])

  def save(self, log=True):
    """Saves at the current step (collective: every worker saves, the chief's is kept)."""
    path = self.manager.save(checkpoint_number=self.step)
    self._saved_step = int(self.step.numpy())
    if self.chief and log:
      logging.info("Saved checkpoint %s.", path)
    return path

  def _stop_preempted(self, step, signal_name):
    """Saves at `step` (unless just saved there), logs one line and raises TrainingPreempted."""
    path = self.manager.latest_checkpoint if self._saved_step == step else self.save(log=False)
    if not self.chief:
      path = f"{self.train_config.checkpoint_dir} (the chief's copy)"
    cause = signal_name or "a signal to another worker"
    message = (f"Preempted by {cause} at step {step} of {self.train_config.train_steps}: saved "
               f"checkpoint {path}; exiting with code {PREEMPTED_EXIT_CODE}. Run the same "
               "command to resume from it.")
    logging.warning(message)
    raise TrainingPreempted(message)

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
    # A log line covers every step since the previous one (several loops when steps_per_loop is
    # below log_every): their mean loss and terms, their rate.
    window_start, window_steps, window_loss, window_terms = time.time(), 0, 0.0, {}
    with writer.as_default(), SignalWatch(self.strategy) as signals:
      step = start
      while step < train.train_steps:
        count = self._loop_length(step)
        loss_sum, term_sums = (self._train_step(self.iterator) if count == 1 else
                               self._train_loop(self.iterator, tf.constant(count)))
        step += count
        loss = float(loss_sum) / count  # the mean over the loop's steps
        terms = {name: float(value) / count for name, value in term_sums.items()}
        if not math.isfinite(loss):
          steps = f"step {step}" if count == 1 else f"steps {step - count + 1}..{step}"
          raise TrainingDivergedError(
              f"loss is {loss} at {steps} (terms: "
              + ", ".join(f"{name}={value:.4g}" for name, value in terms.items())
              + f"); stopped without saving. Last good checkpoint: "
              f"{self.manager.latest_checkpoint or 'none'}. Lower --learning_rate or check data.")
        first_loss = loss if first_loss is None else first_loss
        window_steps += count
        window_loss += float(loss_sum)
        window_terms = {name: window_terms.get(name, 0.0) + float(value)
                        for name, value in term_sums.items()}
        if step % train.log_every == 0 or step == train.train_steps:
          rate = window_steps / max(time.time() - window_start, 1e-9)
          self._log(step, window_loss / window_steps,
                    {name: value / window_steps for name, value in window_terms.items()}, rate)
          window_start, window_steps, window_loss, window_terms = time.time(), 0, 0.0, {}
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
        if step < train.train_steps and signals.stop_requested():
          writer.flush()
          self._stop_preempted(step, signals.received)
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
                 steps_per_second, format_duration(remaining))
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
    summaries.image("images/input", denormalize_image(images), step)
    summaries.image("images/ground_truth", visualize.colorize(labels.numpy(), self.palette), step)
    summaries.image("images/prediction", visualize.colorize(predictions.numpy(), self.palette),
                    step)
