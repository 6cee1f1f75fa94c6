r"""Checks a converted folder before a long run, so a bad shard fails in minutes, not at step 20k.

  python -m tools.verify_dataset --data_dir=/data/tfrecords/pascal_context [--splits=train,val]

Every record of every shard of each split is read and decoded (the reader `main.py` uses): image
and label sizes must agree and every label value must be a class or ignore (in the library
convention, after the iDS mapping); the record and shard counts must match `dataset_info.json`,
which must describe the dataset. A folder without that file (the authors' iDS records) needs
`--dataset`. Each problem is one line naming the shard and the record; a shard that stops being
readable is reported once and the scan goes on with the next. Exit status 1 when there is any
problem. A progress bar goes to stderr.
"""

import sys
from typing import List, Optional, Sequence

from absl import app, flags, logging

import datasets
from datasets import dataset_info, records
from hfgd_tf import atomic_files

FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags, defined only when run as a program (the converter, imported beside
  this module in tests, defines flags of the same names)."""
  flags.DEFINE_string("data_dir", None, "Folder of <split>-*.tfrecord shards.")
  flags.DEFINE_enum("dataset", None, datasets.dataset_names(),
                    "Dataset of the shards; default: the one dataset_info.json names.")
  flags.DEFINE_list("splits", None,
                    "Splits to check; default: those of dataset_info.json, else train,val.")
  flags.mark_flag_as_required("data_dir")


def _shards(data_dir, split):
  return sorted(path for path in atomic_files.gfile().glob(records.split_files(data_dir, split))
                if not atomic_files.gfile().isdir(path))


def verify(data_dir, dataset: Optional[str] = None, splits: Optional[Sequence[str]] = None,
           show_progress=False) -> List[str]:
  """Scans the shards of `splits` in `data_dir`; returns the problems found, one line each.

  Raises dataset_info.DataDirError when the folder cannot be checked at all (its dataset_info.json
  is unreadable or names another dataset, or no dataset is known).
  """
  # pylint: disable=import-outside-toplevel  (TensorFlow only once the flags are parsed)
  from datasets import tfrecord
  from hfgd_tf.data import sources, unreadable
  content = dataset_info.read_info(data_dir) or {}
  name = dataset or content.get("name")
  if name is None:
    raise dataset_info.DataDirError(f"{data_dir} has no {records.INFO_FILENAME}; pass "
                                    "--dataset")
  info = datasets.get_dataset_info(name)
  if content:
    dataset_info.check_info(data_dir, info)
  listed = content.get("splits", {})
  splits = list(splits or listed or ("train", "val"))
  problems = []
  for split in splits:
    files = _shards(data_dir, split)
    if not files:
      problems.append(f"no {split}-*.tfrecord shards in {data_dir}")
      continue
    expected = listed.get(split, {})
    if expected and len(files) != expected["num_shards"]:
      problems.append(f"{split}: {len(files)} shards in {data_dir}, {records.INFO_FILENAME} "
                      f"lists {expected['num_shards']}")
    total = expected.get("num_examples", 0)
    progress = tfrecord.ProgressBar(split, total or len(files), show_progress,
                                    unit="records" if total else "shards")
    found = {"records": 0, "min": info.num_classes, "max": -1}
    for path in files:

      def check(index, checks, path=path):
        label_h, label_w, image_h, image_w, num_bad, bad_value, low, high = checks.tolist()
        if (label_h, label_w) != (image_h, image_w):
          problems.append(f"record {index} of {path}: image {image_h}x{image_w} but label "
                          f"{label_h}x{label_w}")
        if num_bad:
          problems.append(f"record {index} of {path}: {num_bad} label values such as {bad_value} "
                          f"are neither a class (< {info.num_classes}) nor ignore")
        found["min"], found["max"] = min(found["min"], low), max(found["max"], high)
        found["records"] += 1
        if total:
          progress.advance(1)

      try:
        unreadable.scan_shard(path, True, info.ids_ignore_label, info.num_classes, check)
      except sources.UnreadableRecordError as error:
        problems.append(str(error))
      if not total:
        progress.advance(1)
    progress.close()
    if total and found["records"] != total:
      problems.append(f"{split}: {found['records']} records read, {records.INFO_FILENAME} "
                      f"lists {total}")
    classes = f"classes {found['min']}..{found['max']}" if found["max"] >= 0 else "no class"
    logging.info("%s: %d shards, %d records, %s of %d", split, len(files), found["records"],
                 classes, info.num_classes)
  return problems


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    problems = verify(FLAGS.data_dir, FLAGS.dataset, FLAGS.splits, show_progress=True)
  except dataset_info.DataDirError as error:
    logging.error("%s", error)
    sys.exit(1)
  for problem in problems:
    logging.error("%s", problem)
  if problems:
    sys.exit(f"{len(problems)} problem(s) in {FLAGS.data_dir}")
  logging.info("%s: every record reads, decodes and has valid labels", FLAGS.data_dir)


if __name__ == "__main__":
  define_flags()
  app.run(main)
