"""A converted folder's dataset_info.json is checked before a run builds anything: another dataset,
class count or format version, or missing shards, end in one line naming both values."""

import json
import os
import subprocess
import sys

import pytest
from absl import flags

import datasets
from datasets import records
from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.flags import checked_settings_from_flags, define_all_flags
from hfgd_tf.config import FlagError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _converted(directory, dataset, num_shards=2, **changes):
  """A folder as datasets.convert leaves it (empty shard files suffice for the checks)."""
  os.makedirs(directory, exist_ok=True)
  splits = {}
  for split in ("train", "val"):
    for k in range(num_shards):
      open(os.path.join(directory, f"{split}-{k:05d}-of-{num_shards:05d}.tfrecord"), "wb").close()
    splits[split] = {"num_examples": 4, "num_shards": num_shards,
                     "file_pattern": f"{split}-?????-of-?????.tfrecord"}
  content = {"format_version": records.FORMAT_VERSION,
             **datasets.get_dataset_info(dataset).to_json_dict(), "splits": splits, **changes}
  with open(os.path.join(directory, records.INFO_FILENAME), "w") as f:
    json.dump(content, f)
  return str(directory)


def _settings(*arguments, mode="train"):
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(expand_flagfiles(["main.py", *arguments]))
  return checked_settings_from_flags(flag_values, mode)


def test_a_folder_of_the_requested_dataset_passes(tmp_path):
  folder = _converted(tmp_path / "pc", "pascal_context")
  assert _settings("--dataset=pascal_context", f"--data_dir={folder}").train.data_dir == folder


@pytest.mark.parametrize("changes,message", [
    ({}, "the folder holds dataset 'cityscapes', but --dataset=pascal_context"),
    ({"name": "pascal_context", "num_classes": 60},
     "the folder has 60 classes, but dataset pascal_context has 59"),
    ({"format_version": 2}, "format_version 2, but this hfgd-tf reads version 1"),
])
def test_a_mismatch_is_refused_naming_both_values(tmp_path, changes, message):
  folder = _converted(tmp_path / "x", "cityscapes", **changes)
  for mode in ("train", "eval", "predict"):
    with pytest.raises(FlagError) as error:
      _settings("--dataset=pascal_context", f"--data_dir={folder}", mode=mode)
    assert str(error.value) == (
        f"--data_dir: {folder}/{records.INFO_FILENAME}: {message}"
        + ("; convert the raw data again with datasets.convert" if "format" in message else ""))


def test_builtin_runs_check_an_explicit_folder_too(tmp_path):
  folder = _converted(tmp_path / "pc", "pascal_context")
  with pytest.raises(FlagError, match="holds dataset 'pascal_context', but --dataset=builtin"):
    _settings("--dataset=builtin", f"--data_dir={folder}")


def test_a_missing_shard_of_a_split_the_run_reads_is_refused(tmp_path):
  folder = _converted(tmp_path / "pc", "pascal_context")
  os.remove(os.path.join(folder, "val-00001-of-00002.tfrecord"))
  with pytest.raises(FlagError, match=r"split val has 2 shards, but 1 are in .*incomplete copy"):
    _settings("--dataset=pascal_context", f"--data_dir={folder}", mode="eval")
  _settings("--dataset=pascal_context", f"--data_dir={folder}", "--eval_after_train=false")


def test_a_folder_without_the_file_is_not_checked(tmp_path):
  """The authors' iDS records come without dataset_info.json."""
  (tmp_path / "train-0.tfrecord").write_bytes(b"")
  (tmp_path / "val-0.tfrecord").write_bytes(b"")
  _settings("--dataset=pascal_context", f"--data_dir={tmp_path}")


def test_an_unreadable_file_is_named(tmp_path):
  folder = _converted(tmp_path / "pc", "pascal_context")
  with open(os.path.join(folder, records.INFO_FILENAME), "w") as f:
    f.write("{\"name\": ")
  with pytest.raises(FlagError, match=rf"--data_dir: {folder}/dataset_info.json is unreadable"):
    _settings("--dataset=pascal_context", f"--data_dir={folder}")


def test_main_refuses_a_cityscapes_folder_as_pascal_context_in_one_line(tmp_path):
  folder = _converted(tmp_path / "cs", "cityscapes")
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "main.py"), "--dataset=pascal_context",
       f"--data_dir={folder}"], capture_output=True, text=True, env=env, timeout=120, check=False)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: --data_dir: {folder}/dataset_info.json: the folder holds dataset 'cityscapes', "
      "but --dataset=pascal_context")
