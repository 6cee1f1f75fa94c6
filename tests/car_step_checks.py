"""The first SGD step of SA + CAR through the real flagfile and the project's Trainer, refilled with
the original's weights (tests/data/car_step/), against the original code's own numbers.

Imported by tests/test_car_step.py for one replica; run as a script (`car_step_checks.py
<model_dir>`) for two, on two logical CPU devices, which must be configured before TensorFlow
initialises (one MirroredStrategy per process): it prints the measured errors as JSON.
"""

import dataclasses
import json
import os
import sys

import numpy as np
import tensorflow as tf

if __name__ == "__main__":
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices("CPU")[0],
      [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

# pylint: disable=wrong-import-position
from absl import flags  # noqa: E402

from hfgd_tf import flags as hfgd_flags  # noqa: E402
from hfgd_tf import training  # noqa: E402
from hfgd_tf.flagfiles import expand_flagfiles  # noqa: E402
from hfgd_tf.modeling.losses import segmentation_losses  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "car_step")
FLAGFILE = os.path.join(ROOT, "experiments", "pascal_context",
                        "sa-car_r50-d8_bs16-30k_pascal-context-59-513.cfg")
NUM_CLASSES = 6
LOSS_TERMS = ("total", "ce", "car_inter", "car_intra", "l2")


def reference():
  with open(os.path.join(DATA, "reference.json"), encoding="utf-8") as file:
    return json.load(file)


def _batch():
  batch = np.load(os.path.join(DATA, "batch.npz"))
  return batch["images"], batch["labels"].astype(np.int32)


class BatchTrainer(training.Trainer):
  """The project's Trainer with its input pipeline replaced by the reference batch, split over the
  replicas in order (replica r gets image r at two replicas, as the original's did)."""

  def _dataset(self, input_context, seed):
    del input_context, seed
    images, labels = _batch()
    per_replica = len(images) // self.num_replicas
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(per_replica).repeat()


def build_trainer(strategy, model_dir):
  """The Trainer of the real SA + CAR flagfile, as the reference ran it: random backbone weights,
  float32, global batch 2, 6 classes."""
  values = flags.FlagValues()
  hfgd_flags.define_all_flags(values)
  values(expand_flagfiles(["car_step", f"--flagfile={FLAGFILE}", "--backbone_weights=none",
                           "--mixed_precision=none", "--batch_size=2", f"--model_dir={model_dir}"]))
  settings = hfgd_flags.settings_from_flags(values, "train")
  model_config = dataclasses.replace(settings.model, num_classes=NUM_CLASSES)
  return BatchTrainer(model_config, settings.train, strategy)


def refill(model):
  """Every variable of `model` set to the original's values by the fill rule of fill.json."""
  with open(os.path.join(DATA, "fill.json"), encoding="utf-8") as file:
    fill = json.load(file)
  variables = {variable.path: variable for variable in model.weights}
  filled = set()
  for group, seed in (("backbone", fill["seed"]), ("head", fill["seed"] + 1)):
    rng = np.random.default_rng(seed)
    for path, shape, draw, first, second in fill[group]:
      values = (rng.uniform(first, second, shape) if draw == "uniform"
                else rng.normal(first, second, shape))
      variables[path].assign(values.astype(np.float32))
      filled.add(path)
  missing = sorted(set(variables) - filled)
  if missing:
    raise AssertionError(f"the fill rule does not cover {missing}")


def _relative(ours, theirs):
  """max |ours - theirs| / max |theirs| (a scalar's relative error for scalars)."""
  return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def _with_inter(terms):
  terms = {name: float(value) for name, value in terms.items()}
  terms["car_inter"] = terms["car_c2c"] + terms["car_c2p"]
  return terms


def forward_errors(trainer):
  """Each loss term at the original's initial weights, computed eagerly (training mode, batch
  statistics), against the original's own eager recomputation; restores the BN moving statistics
  that the training-mode call moved."""
  expected = reference()["losses"]["replicas_1"]["step1_terms_at_w0"]
  model = trainer.model
  moving = [(variable, variable.numpy()) for variable in model.non_trainable_weights]
  images, labels = _batch()
  outputs = model({"image": images, "label": labels}, training=True)
  _, terms = segmentation_losses(outputs, labels, trainer.model_config)
  terms = _with_inter(terms)
  penalised = trainer._l2  # pylint: disable=protected-access
  terms["l2"] = trainer.train_config.weight_decay * float(
      tf.add_n([tf.reduce_sum(tf.square(variable)) for variable in penalised]))
  for variable, value in moving:
    variable.assign(value)
  return {name: _relative(terms[name], value) for name, value in expected.items()}


def step_errors(trainer):
  """Runs the Trainer's first step; relative errors of its loss terms and of the representative
  variables' updates against the original's at the same number of replicas."""
  expected = reference()
  replicas = trainer.num_replicas
  variables = {variable.path: variable for variable in trainer.model.weights}
  kept = expected["updates_output_channels_kept"]
  before = {label: variables[path].numpy() for label, path in expected["updates"].items()}
  loss, terms = trainer._train_step(trainer.iterator)  # pylint: disable=protected-access
  terms = _with_inter(terms)
  terms["total"] = float(loss)
  losses = expected["losses"][f"replicas_{replicas}"]["step1"]
  updates = np.load(os.path.join(DATA, "updates.npz"))
  update_errors = {}
  for label, path in expected["updates"].items():
    update = variables[path].numpy() - before[label]
    if update.ndim == 4:
      update = update[..., :kept]
    update_errors[label] = _relative(update, updates[f"r{replicas}/{label}"])
  return {"replicas": replicas,
          "losses": {name: _relative(terms[name], losses[name]) for name in LOSS_TERMS},
          "updates": update_errors}


if __name__ == "__main__":
  two_replicas = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  mirrored = build_trainer(two_replicas, sys.argv[1])
  refill(mirrored.model)
  json.dump(step_errors(mirrored), sys.stdout)
