"""Evaluation as the original did it: the inference protocol (`inference.py`: multi-scale + flip,
sliding window), confusion-matrix mIoU.

Metric (reference §6.2): `cm[true, pred]` over the whole set, pixels labelled `ignore_label` and
the padding outside each image's original size excluded; IoU_k = TP / (row + col - TP) and mIoU over
the classes whose denominator is not zero (absent from both ground truth and predictions: excluded).
The matrix is an int64 variable synchronized on read with SUM, so under a `tf.distribute` strategy
each replica counts its own pixels and reading it sums the replicas.
"""

import dataclasses
import time
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from hfgd_tf.atomic_files import write_json
from hfgd_tf.config import IGNORE_LABEL
from hfgd_tf.data import pipeline
from hfgd_tf.inference import SS_SCALES, class_map, model_logits


class ConfusionMatrix(tf.Module):
  """cm[true, pred] pixel counts, int64, summed across replicas on read.

  Create it under the strategy's scope; call `update` in replica context (inside `strategy.run` or
  with no strategy) and `result` outside it.
  """

  def __init__(self, num_classes, ignore_label=IGNORE_LABEL, name="confusion_matrix"):
    super().__init__(name=name)
    self.num_classes = num_classes
    self.ignore_label = ignore_label
    self.matrix = tf.Variable(
        tf.zeros([num_classes, num_classes], tf.int64), trainable=False, name="matrix",
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM)

  def update(self, labels, predictions, heights=None, widths=None):
    """Counts one batch: labels, predictions int [B, H, W]; heights, widths int [B] valid sizes.

    Pixels labelled `ignore_label` (or outside 0..K-1) and, when sizes are given, pixels at or
    beyond each image's height/width (bottom/right padding) are not counted.
    """
    labels = tf.cast(labels, tf.int32)
    predictions = tf.cast(predictions, tf.int32)
    valid = tf.logical_and(labels >= 0, labels < self.num_classes)
    valid = tf.logical_and(valid, labels != self.ignore_label)
    if heights is not None:
      heights = tf.reshape(tf.cast(heights, tf.int32), [-1, 1, 1])
      widths = tf.reshape(tf.cast(widths, tf.int32), [-1, 1, 1])
      rows = tf.range(tf.shape(labels)[1])[None, :, None] < heights  # [B, H, 1]
      cols = tf.range(tf.shape(labels)[2])[None, None, :] < widths  # [B, 1, W]
      valid = tf.logical_and(valid, tf.logical_and(rows, cols))
    index = tf.where(valid, labels * self.num_classes + predictions, 0)  # [B, H, W] into K*K
    counts = tf.math.unsorted_segment_sum(
        tf.cast(valid, tf.int32), index, self.num_classes ** 2)  # int32: one batch cannot overflow
    self.matrix.assign_add(tf.reshape(tf.cast(counts, tf.int64), [self.num_classes] * 2))

  def result(self):
    """The summed matrix, numpy int64 [K, K] (rows: ground truth, columns: prediction)."""
    return self.matrix.read_value().numpy()


@dataclasses.dataclass
class EvalResults:
  """Metrics from one confusion matrix; `iou` is NaN for classes absent from GT and prediction."""
  confusion_matrix: np.ndarray  # int64 [K, K], rows ground truth, columns prediction
  iou: np.ndarray  # float64 [K]
  mean_iou: float
  pixel_accuracy: float
  mean_accuracy: float  # over the classes that occur in the ground truth
  num_images: int = 0


def iou_from_confusion(confusion_matrix, num_images=0):
  """EvalResults from cm[true, pred]; a metric with nothing to average over is 0 (divide-no-nan)."""
  cm = np.asarray(confusion_matrix, np.float64)
  true_positive = np.diag(cm)
  ground_truth = cm.sum(axis=1)
  denominator = ground_truth + cm.sum(axis=0) - true_positive
  present = denominator > 0
  iou = np.full(len(cm), np.nan)
  iou[present] = true_positive[present] / denominator[present]
  has_gt = ground_truth > 0
  return EvalResults(
      confusion_matrix=np.asarray(confusion_matrix, np.int64),
      iou=iou,
      mean_iou=float(iou[present].mean()) if present.any() else 0.0,
      pixel_accuracy=float(true_positive.sum() / cm.sum()) if cm.sum() > 0 else 0.0,
      mean_accuracy=(float((true_positive[has_gt] / ground_truth[has_gt]).mean())
                     if has_gt.any() else 0.0),
      num_images=int(num_images))


def class_map_at_label_size(logits, batch):
  """The predicted classes of rescaled images at their labels' resolution (mmseg's protocol).

  logits: float32 [B, h, w, K] of the padded rescaled images; batch["scaled_height"/"_width"] [B]
  their rescaled sizes, batch["height"/"width"] [B] the original ones, batch["label"] [B, H, W]
  the labels (padded to the largest). Each image's logits are cropped to its rescaled size,
  resized bilinearly to its original size and argmaxed, one image at a time (so at most one
  image's full-resolution logits exist); returns int32 [B, H, W] (padding: class 0, not counted).
  """
  canvas = tf.shape(batch["label"])[1:3]

  def one_image(args):
    image_logits, scaled_height, scaled_width, height, width = args
    valid = image_logits[:scaled_height, :scaled_width]  # [sh, sw, K]
    full = tf.image.resize(valid[None], tf.stack([height, width]))[0]  # [height, width, K]
    classes = tf.argmax(full, -1, output_type=tf.int32)
    return tf.pad(classes, [[0, canvas[0] - height], [0, canvas[1] - width]])  # [H, W]

  return tf.map_fn(
      one_image, (logits, batch["scaled_height"], batch["scaled_width"], batch["height"],
                  batch["width"]),
      fn_output_signature=tf.TensorSpec([None, None], tf.int32), parallel_iterations=1)


def evaluate(model, dataset, num_classes, scales=SS_SCALES, flip=False, window=None,
             strategy: Optional[tf.distribute.Strategy] = None, ignore_label=IGNORE_LABEL,
             log_every=50, jit_compile=False) -> EvalResults:
  """mIoU of `model` over one pass of `dataset` (batches as `pipeline.eval_dataset` yields).

  Each batch is distributed over the strategy's replicas (the default strategy when None) and runs
  the inference protocol (`inference.model_logits`) in one `tf.function` step; predictions are the
  argmax of the averaged logits, compiled with XLA when `jit_compile` (once per batch shape). Batches
  of rescaled images (`pipeline.eval_dataset(rescale=...)`) are scored at their labels' resolution
  (`class_map_at_label_size`).
  """
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    matrix = ConfusionMatrix(num_classes, ignore_label)

  def predict(images):
    return class_map(model_logits(model, images, scales, flip, window))

  def logits(images):
    return model_logits(model, images, scales, flip, window)

  predict = tf.function(predict, jit_compile=True) if jit_compile else predict
  logits = tf.function(logits, jit_compile=True) if jit_compile else logits
  rescaled = "scaled_height" in dataset.element_spec

  def predictions_of(batch):
    if rescaled:  # images resized by the pipeline: predict at the label's own resolution
      return class_map_at_label_size(logits(batch["image"]), batch)
    return predict(batch["image"])

  def replica_step(batch):
    # The last batch may leave a replica no images, and the model cannot run on an empty batch.
    predictions = tf.cond(tf.shape(batch["image"])[0] > 0, lambda: predictions_of(batch),
                          lambda: tf.zeros_like(batch["label"]))
    matrix.update(batch["label"], predictions, batch["height"], batch["width"])
    return tf.shape(batch["label"])[0]

  def step(batch):
    images = strategy.run(replica_step, args=(batch,))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, images, axis=None)

  # Strings cannot be placed on accelerators; filenames are not needed for the metric. Workers
  # take every n-th batch (an eval split may be one file, too few to share out by file).
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  keys = ("image", "label", "height", "width") + (
      ("scaled_height", "scaled_width") if rescaled else ())
  dataset = strategy.experimental_distribute_dataset(dataset.map(
      lambda batch: {key: batch[key] for key in keys}).with_options(options))
  # One trace for the element spec (batch size unknown), not one per batch size.
  step = tf.function(step, input_signature=[dataset.element_spec])
  start = time.time()
  num_images = 0
  for batches, batch in enumerate(dataset, 1):
    num_images += int(step(batch))
    if log_every and batches % log_every == 0:
      logging.info("evaluated %d images in %.1f s", num_images, time.time() - start)
  logging.info("evaluated %d images in %.1f s (scales %s, flip %s, window %s)", num_images,
               time.time() - start, list(scales), flip, window)
  return iou_from_confusion(matrix.result(), num_images)


def format_results(results: EvalResults, class_names: Sequence[str]) -> str:
  """A table of per-class IoU (%) with class names, then mIoU, pixel and mean class accuracy."""
  width = max(len("class"), *(len(name) for name in class_names))
  lines = [f"{'class':<{width}}  IoU (%)"]
  for name, iou in zip(class_names, results.iou):
    lines.append(f"{name:<{width}}  " + ("absent" if np.isnan(iou) else f"{100 * iou:7.2f}"))
  counted = int(np.sum(~np.isnan(results.iou)))
  lines += [
      f"{'mIoU':<{width}}  {100 * results.mean_iou:7.2f}  ({counted} of {len(results.iou)} "
      "classes present)",
      f"{'pixel accuracy':<{width}}  {100 * results.pixel_accuracy:7.2f}",
      f"{'mean accuracy':<{width}}  {100 * results.mean_accuracy:7.2f}",
      f"{'images':<{width}}  {results.num_images}",
  ]
  return "\n".join(lines)


def results_dict(results: EvalResults, class_names: Sequence[str]):
  """JSON-ready results; classes absent from GT and prediction have IoU null."""
  return {
      "mean_iou": results.mean_iou,
      "pixel_accuracy": results.pixel_accuracy,
      "mean_accuracy": results.mean_accuracy,
      "num_images": results.num_images,
      "per_class_iou": {name: None if np.isnan(iou) else float(iou)
                        for name, iou in zip(class_names, results.iou)},
      "confusion_matrix": results.confusion_matrix.tolist(),
  }


def write_results_json(results: EvalResults, class_names: Sequence[str], path, extra=None):
  """Writes `results_dict` (plus `extra`, e.g. the protocol) to `path` atomically (temp, rename)."""
  payload = results_dict(results, class_names)
  payload.update(extra or {})
  write_json(path, payload)


class PeriodicEval:
  """Evaluation during training: single-scale mIoU on the eval split (`evaluate`), and a few
  predictions for TensorBoard, both on the devices of `strategy` (the training strategy, whose
  scope built the model; None: the default strategy). `ids_ignore_label` as in
  `training.Trainer`."""

  def __init__(self, file_pattern, num_classes, eval_height, eval_width, batch_size,
               max_examples=None, ignore_label=IGNORE_LABEL, ids_ignore_label=IGNORE_LABEL,
               jit_compile=False, strategy: Optional[tf.distribute.Strategy] = None,
               rescale=None):
    self.num_classes = num_classes
    self.ignore_label = ignore_label
    self.jit_compile = jit_compile
    self.strategy = strategy or tf.distribute.get_strategy()
    self.dataset = pipeline.eval_dataset(
        file_pattern, batch_size, eval_height, eval_width, ignore_label=ignore_label,
        max_examples=max_examples, ids_ignore_label=ids_ignore_label, rescale=rescale)
    # The few sample images run whole on every replica (no collective, so each worker may alone);
    # the first replica's predictions are kept.
    self._predict = tf.function(lambda model, images: self.strategy.experimental_local_results(
        self.strategy.run(lambda x: class_map(model(x, training=False)), args=(images,)))[0])

  def evaluate(self, model):
    """{"miou", "pixel_accuracy"} over the eval split (padding and ignored pixels excluded)."""
    results = evaluate(model, self.dataset, self.num_classes, strategy=self.strategy,
                       ignore_label=self.ignore_label, log_every=0, jit_compile=self.jit_compile)
    return {"miou": results.mean_iou, "pixel_accuracy": results.pixel_accuracy}

  def sample(self, model, count=4):
    """(images [n, H, W, 3] in [-1, 1], labels [n, H, W], predictions [n, H, W]) of the first
    eval batch (with `rescale`, labels at their own resolution: other H, W)."""
    batch = next(iter(self.dataset))
    images, labels = batch["image"][:count], batch["label"][:count]
    return images, labels, self._predict(model, images)
