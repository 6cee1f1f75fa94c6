"""What each --mode does, given the resolved RunSettings (hfgd_tf/config.py) and nothing else.

train (then optionally evaluate, predict and export), pretrain (the backbone only), eval,
predict, export, benchmark and flops.
Heavy modules are imported by the mode that needs them, so a flag error never waits for them.
"""

import dataclasses
import os

from absl import logging

from datasets import records
from datasets.tfds_adapters import is_tfds_name

# pylint: disable=import-outside-toplevel


def _log_run_report(settings, strategy=None, steps_left=None):
  """The start-of-run block (hfgd_tf/run_report.py): versions, devices, strategy, precision and
  XLA as resolved for `strategy`; WARNING lines when the machine is not what the run needs."""
  from hfgd_tf import run_report
  from hfgd_tf.distribution import use_jit_compile
  from hfgd_tf.precision import resolve_mixed_precision
  run_report.log_run_report(
      settings, strategy, resolve_mixed_precision(settings.train.mixed_precision, strategy),
      use_jit_compile(settings.train.jit_compile, strategy), steps_left=steps_left)


def _prepare_data(settings):
  if settings.train.dataset == "builtin":
    from datasets.builtin import ensure_builtin_dataset
    logging.info("Built-in dataset in %s (generated if missing).", settings.train.data_dir)
    ensure_builtin_dataset(settings.train.data_dir, seed=0,
                           num_train=settings.train.builtin_num_train,
                           num_val=settings.train.builtin_num_val)


def _eval_source(settings):
  """The eval split's examples: converted shards, or a prepared TFDS split for tfds: datasets."""
  from hfgd_tf.data.pipeline import split_source
  return split_source(settings.train.dataset, settings.train.data_dir, settings.train.eval_split)


def _protocol(settings):
  return dict(scales=settings.eval.scales, flip=settings.eval.flip,
              window=settings.eval.sliding_window)


def _model(settings, model, strategy=None):
  if model is not None:
    return model
  from hfgd_tf import precision
  from hfgd_tf.checkpoints import restore_model
  # Compute as in training, e.g. the bfloat16 demo, TPUs.
  precision.prepare_numerics(settings.train, strategy)
  return restore_model(settings.model, settings.train.checkpoint_dir)


def _pretrain(settings, strategy=None):
  """Pretrains the backbone (hfgd_tf/pretrain.py) in the run's precision; returns the weights."""
  from hfgd_tf import precision, pretrain
  precision.prepare_numerics(settings.train, strategy)
  return pretrain.ensure_pretrained_backbone(
      pretrain.weights_path(settings.train.model_dir, settings.model.backbone),
      settings.model.backbone, settings.train.pretrain_steps)


def run_pretrain(settings):
  """Only the backbone pretraining of --pretrain_steps: writes the weights and says where."""
  path = _pretrain(settings)
  logging.info("Start from them with --backbone_weights=%s (or --mode=train with the same "
               "--pretrain_steps and --model_dir).", path)
  return {"backbone_weights": path}


def run_train(settings, strategy=None):
  """Trains (resuming from the run's checkpoints), then evaluates/predicts/exports as asked.
  With --pretrain_steps, a run that starts from scratch first pretrains its backbone.
  `strategy`: one the caller created (benchmarks/device_check.py); default: the flags'."""
  from hfgd_tf import training
  from hfgd_tf.checkpoints import latest_resume_point
  from hfgd_tf.distribution import create_strategy, is_chief, use_jit_compile
  from hfgd_tf.evaluation import PeriodicEval
  strategy = strategy or create_strategy(
      settings.train.distribution, settings.train.tpu, settings.train.cluster_resolver,
      settings.train.slurm_port_base)
  resume_point = latest_resume_point(settings.train.checkpoint_dir)  # looked up once per run
  _log_run_report(settings, strategy, steps_left=settings.train.train_steps - resume_point[1])
  _prepare_data(settings)
  if settings.train.pretrain_steps and resume_point[0] is None:
    settings = dataclasses.replace(settings, train=dataclasses.replace(
        settings.train, backbone_weights=_pretrain(settings, strategy)))
  ids_ignore_label = settings.dataset_info.ids_ignore_label
  validation = PeriodicEval(_eval_source(settings), settings.model.num_classes,
                            settings.eval.eval_height, settings.eval.eval_width,
                            settings.eval.batch_size, settings.eval.max_examples,
                            ids_ignore_label=ids_ignore_label,
                            jit_compile=use_jit_compile(settings.eval.jit_compile, strategy),
                            strategy=strategy, rescale=settings.eval.rescale)
  trainer = training.Trainer(settings.model, settings.train, strategy,
                             palette=settings.dataset_info.palette, validation=validation,
                             ids_ignore_label=ids_ignore_label, resume_point=resume_point)
  results = trainer.train()
  logging.info("Training done at step %d; checkpoints in %s, TensorBoard logs in %s.",
               results["step"], settings.train.checkpoint_dir, settings.train.tensorboard_dir)
  if settings.train.eval_after_train:
    run_eval(settings, model=trainer.model, strategy=strategy)
  chief = is_chief(strategy)  # the other workers would write into the chief's folders
  if settings.predict_after_train and chief:
    run_predict(settings, model=trainer.model)
  if settings.export_after_train and chief:
    run_export(settings, model=trainer.model)
  return results


def run_eval(settings, model=None, strategy=None):
  """mIoU with the configured protocol; per-class table on the console, JSON in model_dir (by the
  chief alone when workers share the evaluation). `model`: one built under `strategy`'s scope."""
  from hfgd_tf import evaluation
  from hfgd_tf.data import pipeline
  from hfgd_tf.distribution import create_strategy, is_chief, use_jit_compile
  _prepare_data(settings)
  if model is None:
    strategy = create_strategy(settings.train.distribution, settings.train.tpu,
                               settings.train.cluster_resolver, settings.train.slurm_port_base)
    _log_run_report(settings, strategy)
    with strategy.scope():
      model = _model(settings, None, strategy)
  ignore_label = settings.model.ignore_label
  dataset = pipeline.eval_dataset(
      _eval_source(settings), settings.eval.batch_size, settings.eval.eval_height,
      settings.eval.eval_width, ignore_label=ignore_label,
      max_examples=settings.eval.max_examples,
      ids_ignore_label=settings.dataset_info.ids_ignore_label, rescale=settings.eval.rescale)
  results = evaluation.evaluate(model, dataset, settings.model.num_classes, strategy=strategy,
                                ignore_label=ignore_label,
                                jit_compile=use_jit_compile(settings.eval.jit_compile, strategy),
                                **_protocol(settings))
  class_names = settings.dataset_info.class_names
  path = os.path.join(settings.train.model_dir, "eval_results.json")
  logging.info("Eval on %s/%s:\n%s", settings.train.dataset, settings.train.eval_split,
               evaluation.format_results(results, class_names))
  if is_chief(strategy):
    evaluation.write_results_json(results, class_names, path, extra=dict(
        dataset=settings.train.dataset, split=settings.train.eval_split,
        scales=list(settings.eval.scales), flip=settings.eval.flip,
        sliding_window=settings.eval.sliding_window))
    logging.info("Results written to %s.", path)
  return results


def _write_eval_images(settings, count=8):
  """Writes the first `count` eval images as PNG files (the built-in dataset has no image files);
  returns their folder."""
  import numpy as np

  from hfgd_tf import visualize
  from hfgd_tf.data import pipeline
  folder = os.path.join(settings.train.model_dir, "predict_inputs")
  for index, example in enumerate(pipeline.examples(_eval_source(settings)).take(count)):
    visualize.write_png(os.path.join(folder, f"{index:03d}.png"),
                        np.clip(np.round(example["image"].numpy()), 0, 255).astype(np.uint8))
  return folder


def _write_comparison(settings, model, count=4):
  """Writes <model_dir>/demo.png: input | ground truth | prediction for the first eval images."""
  from hfgd_tf import visualize
  from hfgd_tf.data import pipeline
  from hfgd_tf.inference import class_map
  from hfgd_tf.ops import denormalize_image
  batch = next(iter(pipeline.eval_dataset(_eval_source(settings), count,
                                          settings.eval.eval_height, settings.eval.eval_width)))
  # The largest image's extent; smaller ones show their padding (ignore: black).
  height, width = int(max(batch["height"])), int(max(batch["width"]))
  predictions = class_map(model(batch["image"], training=False))
  images = denormalize_image(batch["image"]).numpy()
  path = os.path.join(settings.train.model_dir, "demo.png")
  visualize.write_png(path, visualize.comparison_grid(
      images[:, :height, :width], batch["label"].numpy()[:, :height, :width],
      predictions.numpy()[:, :height, :width], settings.dataset_info.palette))
  logging.info("Input | ground truth | prediction of %d eval images written to %s.",
               len(images), path)


def run_predict(settings, model=None):
  """Colourised masks and overlays for a folder or glob of images (train: the eval split's, and
  an input | ground truth | prediction picture of the first ones)."""
  from hfgd_tf.predict import predict_images
  model = _model(settings, model)
  if not settings.predict_input:
    _write_comparison(settings, model)
  inputs = settings.predict_input or _write_eval_images(settings)
  summary = predict_images(model, inputs, settings.predict_output_dir,
                           settings.dataset_info.palette, **_protocol(settings))
  logging.info("Predictions of %d images written to %s%s.", len(summary.processed),
               settings.predict_output_dir,
               f" ({len(summary.skipped)} unreadable skipped)" if summary.skipped else "")
  return summary


def run_export(settings, model=None):
  """Exports with the configured protocol as --export_format says (docs/serving.md): a SavedModel
  in TF Serving's layout, <export_dir>/<export_version>/ (images of any size; warm-up requests at
  the export size), or LiteRT models (<export_dir>/tflite/) or an ONNX model (<export_dir>/onnx/)
  at the fixed export size. Returns the SavedModel's or the ONNX model's path, or {weight type:
  path} of the LiteRT models."""
  model = _model(settings, model)
  common = dict(overwrite=settings.export_overwrite, class_names=settings.dataset_info.class_names,
                palette=settings.dataset_info.palette)
  height, width = settings.export_size
  if settings.export_format == "saved_model":
    from hfgd_tf.export import export_saved_model
    path = export_saved_model(model, os.path.join(settings.export_dir,
                                                  str(settings.export_version)),
                              inputs=settings.export_input, warmup_size=(height, width),
                              **common, **_protocol(settings))
    logging.info("SavedModel exported to %s (TF Serving: --model_base_path=%s).", path,
                 settings.export_dir)
    return path
  from hfgd_tf import export_formats
  if settings.export_format == "tflite":
    paths = export_formats.export_tflite(model, os.path.join(settings.export_dir, "tflite"),
                                         height, width, settings.export_tflite_types, **common)
    logging.info("LiteRT models (single scale, uint8 [1, %d, %d, 3]) exported: %s.", height,
                 width, ", ".join(paths.values()))
    return paths
  path = export_formats.export_onnx(model, os.path.join(settings.export_dir, "onnx"), height,
                                    width, **common, **_protocol(settings))
  logging.info("ONNX model (uint8 [N, %d, %d, 3]) exported to %s.", height, width, path)
  return path


def run_benchmark(settings):
  """Training and inference speed and peak memory against the SFPN baseline, as ratios."""
  from hfgd_tf import benchmark
  benchmark.run_benchmark(settings, steps=settings.benchmark_steps,
                          rounds=settings.benchmark_rounds,
                          batch_size=settings.benchmark_batch_size,
                          memory=settings.benchmark_memory)


def run_flops(settings):
  """FLOPs and parameters per paper component (or of backbones alone, --flops_backbones)."""
  from hfgd_tf import precision
  from hfgd_tf.flops import format_backbone_complexity, format_complexity, model_complexity
  from hfgd_tf.modeling.model import build_model
  precision.prepare_numerics(settings.train)
  height, width = settings.flops_size
  if settings.flops_backbones:
    logging.info("\n%s", format_backbone_complexity(settings.flops_backbones, height))
    return
  config = settings.model
  report = model_complexity(build_model(config), height, width)
  decoder = (config.decoder if config.decoder == "none"
             else f"{config.decoder} OS={config.decoder_output_stride}")
  title = (f"{config.backbone} (OS={config.backbone_output_stride}) / {config.encoder} / {decoder}"
           f" / HFGM={config.hfgm}: {height}x{width}x3, K={config.num_classes}")
  logging.info("\n%s", format_complexity(report, title))


RUNNERS = {"train": run_train, "pretrain": run_pretrain, "eval": run_eval, "predict": run_predict,
           "export": run_export, "benchmark": run_benchmark, "flops": run_flops}


def _naming_unreadable_records(settings):
  """A context in which an unreadable record of the shards the mode reads (training: both splits;
  otherwise the eval split, also the demo's predict inputs) ends the run with one error naming the
  shard and the record; checkpoints written before it stay as they are."""
  from hfgd_tf.data.unreadable import naming_unreadable_records
  splits = ([settings.train.train_split] if settings.mode == "train" else []) + [
      settings.train.eval_split]
  patterns = ([records.split_files(settings.train.data_dir, split) for split in splits]
              if settings.train.data_dir and not is_tfds_name(settings.train.dataset) else [])
  return naming_unreadable_records(patterns, settings.dataset_info.ids_ignore_label)


def run(settings):
  """Runs `settings.mode`; an unreadable record ends it with sources.UnreadableRecordError
  naming the shard and the record."""
  if settings.mode not in ("train", "eval"):  # those two log it with their strategy
    _log_run_report(settings)
  with _naming_unreadable_records(settings):
    return RUNNERS[settings.mode](settings)
