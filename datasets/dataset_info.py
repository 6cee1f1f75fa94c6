"""A converted folder's own description, `dataset_info.json`, read and checked on any filesystem.

The converter writes the file last (its presence means the conversion finished). Runs check it
against the dataset they were asked for before building anything, so a Cityscapes folder passed
as `--dataset=pascal_context` is refused instead of trained with the wrong classes. Folders without
the file (the authors' iDS records, hand-made folders) are not checked.
"""

import json
import os
from typing import Optional

from datasets.records import FORMAT_VERSION, info_path
from hfgd_tf import atomic_files


class DataDirError(ValueError):
  """A converted folder that does not fit the run; the message names the file and both values."""


def read_info(data_dir) -> Optional[dict]:
  """The folder's `dataset_info.json` as a dict, or None when it has none."""
  path = info_path(data_dir)
  if not atomic_files.isfile(path):
    return None
  try:
    content = atomic_files.read_json(path)
  except OSError as e:
    raise DataDirError(str(e)) from e
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataDirError(f"{path} is unreadable: {e}") from e
  if not isinstance(content, dict):
    raise DataDirError(f"{path} is not a JSON object")
  return content


def check_info(data_dir, info, splits=()) -> Optional[dict]:
  """Refuses a folder whose `dataset_info.json` disagrees with `info` (a `core.DatasetInfo`).

  Compared: format version, dataset name, class count and, for each of `splits` the file lists,
  that all its shards are present (a partial copy would silently train on part of the data).
  Returns the file's content, or None when the folder has no such file.
  """
  content = read_info(data_dir)
  if content is None:
    return None
  path = info_path(data_dir)
  version = content.get("format_version")
  if version != FORMAT_VERSION:
    raise DataDirError(f"{path}: format_version {version}, but this hfgd-tf reads version "
                       f"{FORMAT_VERSION}; convert the raw data again with datasets.convert")
  name = content.get("name")
  if name != info.name:
    raise DataDirError(f"{path}: the folder holds dataset {name!r}, but --dataset={info.name}")
  num_classes = content.get("num_classes")
  if num_classes != info.num_classes:
    raise DataDirError(f"{path}: the folder has {num_classes} classes, but dataset {info.name} "
                       f"has {info.num_classes}")
  for split in splits:
    listed = content.get("splits", {}).get(split)
    if not listed:
      continue
    found = len(atomic_files.gfile().glob(os.path.join(data_dir, listed["file_pattern"])))
    if found != listed["num_shards"]:
      raise DataDirError(f"{path}: split {split} has {listed['num_shards']} shards, but "
                         f"{found} are in {data_dir} (an incomplete copy?)")
  return content
