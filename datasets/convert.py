r"""Converts a raw dataset download into sharded TFRecords plus `dataset_info.json`.

  python -m datasets.convert --dataset=pascal_context --raw_dir=/data/raw/pascal_context \
      --output_dir=/data/tfrecords/pascal_context --num_workers=8

Rerunning the same command resumes: finished shards are kept, unfinished ones rewritten. Bad input
(missing image, size mismatch, unknown label value, unreadable file) stops with one error naming the
file; shards finished before it stay. `--dataset=builtin` generates the built-in dataset instead
(no raw_dir needed).
"""

import os
import sys

from absl import app, flags, logging

import datasets
from datasets import builtin, core

_DATASET = flags.DEFINE_enum("dataset", None, datasets.dataset_names(), "Dataset to convert.")
_RAW_DIR = flags.DEFINE_string("raw_dir", None, "Raw download (layout in the dataset's module).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where shards and dataset_info.json go.")
_SPLITS = flags.DEFINE_list("splits", ["train", "val"], "Splits to convert.")
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", None, "Shards per split; default: >= 16 for 512+ examples, ~1024 per shard.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Writer processes.")
_SEED = flags.DEFINE_integer("seed", 0, "Built-in dataset only: generator seed.")
flags.mark_flags_as_required(["dataset", "output_dir"])


def convert(name, raw_dir, output_dir, splits=("train", "val"), num_shards=None, num_workers=1,
            show_progress=False):
  """Lists and converts `splits` of dataset `name`; returns the dataset_info dict written."""
  from datasets import tfrecord  # pylint: disable=import-outside-toplevel  (imports TensorFlow)
  module = datasets.get_dataset_module(name)
  split_items = {}
  for split in splits:
    split_items[split] = module.list_examples(raw_dir, split)
    expected = module.INFO.split_sizes.get(split)
    if expected is not None and expected != len(split_items[split]):
      logging.warning("%s %s: found %d examples, the official split has %d", name, split,
                      len(split_items[split]), expected)
  return tfrecord.write_dataset(module.INFO, module.load_example, split_items, output_dir,
                                num_shards, num_workers, show_progress)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    if _DATASET.value == "builtin":
      builtin.ensure_builtin_dataset(_OUTPUT_DIR.value, seed=_SEED.value,
                                     num_workers=_NUM_WORKERS.value, show_progress=True)
    else:
      if not _RAW_DIR.value:
        raise app.UsageError("--raw_dir is required")
      convert(_DATASET.value, _RAW_DIR.value, _OUTPUT_DIR.value, _SPLITS.value, _NUM_SHARDS.value,
              _NUM_WORKERS.value, show_progress=True)
  except core.ConversionError as e:
    logging.error("%s", e)
    sys.exit(1)
  logging.info("done: %s", _OUTPUT_DIR.value)


if __name__ == "__main__":
  app.run(main)
