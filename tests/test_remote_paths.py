"""Every file the project reads or writes goes through tf.io.gfile: TF's in-memory filesystem
`ram://` stands in for a bucket (gs://). The whole chain (generate or convert, train, checkpoint,
resume, eval, predict, export, verify) runs under ram:// in this process, from an empty working
directory and an empty HOME that must stay empty; writes are atomic there too."""

import hashlib
import io
import os
import uuid

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

from datasets import builtin, cityscapes, convert, dataset_info, records
from hfgd_tf import atomic_files, checkpoints, pretrain, runs, visualize
from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.config import FlagError
from hfgd_tf.flags import checked_settings_from_flags, define_all_flags
from tools import verify_dataset

gfile = tf.io.gfile
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(name="ram")
def _ram():
  """A fresh ram:// folder (the filesystem lives as long as the process)."""
  return f"ram://{uuid.uuid4().hex}"


@pytest.fixture(name="no_local_writes")
def _no_local_writes(tmp_path, monkeypatch):
  """Runs the test in an empty working directory with an empty HOME; both must stay empty."""
  cwd, home = tmp_path / "cwd", tmp_path / "home"
  cwd.mkdir()
  home.mkdir()
  monkeypatch.chdir(cwd)
  monkeypatch.setenv("HOME", str(home))
  yield
  written = sorted(str(path) for folder in (cwd, home) for path in folder.rglob("*"))
  assert not written, f"written locally: {written}"


def _settings(*arguments, mode):
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(["main.py", *arguments])
  return checked_settings_from_flags(flag_values, mode)


def _files(folder):
  """Every file under `folder`, relative to it."""
  return sorted(os.path.join(sub[len(folder):].lstrip("/"), name)
                for sub, _, names in gfile.walk(folder) for name in names)


def test_parent_keeps_urls():
  assert atomic_files.parent("gs://bucket/runs/x") == "gs://bucket/runs"
  assert atomic_files.parent("ram://x") == "ram://"
  assert atomic_files.parent("runs/x/eval.json") == "runs/x"
  assert atomic_files.parent("eval.json") == ""


def test_atomic_writes_on_ram_replace_whole_files_and_leave_no_temporary(ram):
  path = f"{ram}/a/b/results.json"
  atomic_files.write_json(path, {"miou": 0.5})
  atomic_files.write_json(path, {"miou": 0.6})
  assert atomic_files.read_json(path) == {"miou": 0.6}
  with pytest.raises(RuntimeError):
    with atomic_files.atomic_write(path) as f:
      f.write('{"miou": ')
      raise RuntimeError("interrupted")
  assert atomic_files.read_json(path) == {"miou": 0.6}
  assert gfile.listdir(f"{ram}/a/b") == ["results.json"]


def test_a_filesystem_that_cannot_rename_gets_the_finished_file_copied(ram, monkeypatch):
  def unimplemented(*args, **kwargs):
    raise tf.errors.UnimplementedError(None, None, "rename")
  monkeypatch.setattr(tf.io.gfile, "rename", unimplemented)
  visualize.write_png(f"{ram}/x.png", np.full((3, 4), 7, np.uint8))
  with gfile.GFile(f"{ram}/x.png", "rb") as f:
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(f.read()))), 7)
  assert gfile.listdir(ram) == ["x.png"]


def test_publish_dir_on_ram_replaces_an_old_folder_with_the_marker_file_last(ram, monkeypatch):
  for name, content in (("old.txt", "old"), ("saved_model.pb", "old")):
    atomic_files.write_bytes(f"{ram}/export/{name}", content.encode())
  temp = atomic_files.temp_sibling(f"{ram}/export")
  for name in ("saved_model.pb", "variables/variables.index", "fingerprint.pb"):
    atomic_files.write_bytes(f"{temp}/{name}", b"new")
  copied = []
  copy = tf.io.gfile.copy
  monkeypatch.setattr(tf.io.gfile, "copy",
                      lambda source, target, *a, **k: (copied.append(target),
                                                       copy(source, target, *a, **k)))
  atomic_files.publish_dir(temp, f"{ram}/export", "saved_model.pb")
  assert copied[-1] == f"{ram}/export/saved_model.pb"
  assert _files(f"{ram}/export") == ["fingerprint.pb", "saved_model.pb",
                                      "variables/variables.index"]
  assert atomic_files.read_bytes(f"{ram}/export/saved_model.pb") == b"new"
  assert not gfile.exists(temp)


def test_a_checkpoint_prefix_on_ram_restores_the_model(ram):
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  expected = [weight.numpy() for weight in model.weights]
  prefix = tf.train.Checkpoint(model=checkpoints.model_state(model)).write(f"{ram}/ckpt-7")
  for weight in model.weights:
    weight.assign(tf.zeros_like(weight))
  assert checkpoints.restore_model_weights(model, prefix) == prefix
  for value, weight in zip(expected, model.weights):
    np.testing.assert_array_equal(value, weight.numpy())


@pytest.mark.usefixtures("no_local_writes")
def test_a_paper_flagfile_in_a_bucket_reads_its_relative_includes_there(ram):
  """The paper's experiment files copied to ram:// expand to what the local ones give, and the
  files they include are read from ram://, not from the local experiments/."""
  experiment = "cityscapes/hfgd-os4_r50_bs16-30k_cityscapes-513x1025.cfg"
  for folder in ("cityscapes", "common"):
    for name in gfile.listdir(f"{ROOT}/experiments/{folder}"):
      gfile.makedirs(f"{ram}/experiments/{folder}")
      gfile.copy(f"{ROOT}/experiments/{folder}/{name}", f"{ram}/experiments/{folder}/{name}")
  local = expand_flagfiles(["main.py", f"--flagfile={ROOT}/experiments/{experiment}", "--x=1"])
  remote = expand_flagfiles(["main.py", f"--flagfile={ram}/experiments/{experiment}", "--x=1"])
  assert remote == local and "--dataset=cityscapes" in remote
  assert local[1] == "--experiment_name=hfgd-os4_r50_bs16-30k_cityscapes-513x1025"

  atomic_files.write_bytes(f"{ram}/experiments/common/eval_ss.cfg", b"--scales=0.5\n")
  edited = expand_flagfiles(["main.py", f"--flagfile={ram}/experiments/{experiment}"])
  assert "--scales=0.5" in edited and "--scales=0.5" not in local


def test_flagfiles_in_a_bucket_nest_by_relative_and_absolute_urls(ram):
  atomic_files.write_bytes(f"{ram}/a/top.cfg", b"--flagfile=b/mid.cfg\n--batch_size=2\n")
  atomic_files.write_bytes(f"{ram}/a/b/mid.cfg",
                           f"# from {ram}\n--flagfile=../../c.cfg\n--flagfile={ram}/d.cfg\n"
                           "--mode=flops\n".encode())
  atomic_files.write_bytes(f"{ram}/c.cfg", b"--train_steps=7\n")
  atomic_files.write_bytes(f"{ram}/d.cfg", b"--train_steps=8\n")
  assert expand_flagfiles(["main.py", f"--flagfile={ram}/a/top.cfg", "--batch_size=4"]) == [
      "main.py", "--experiment_name=top", "--train_steps=7", "--train_steps=8", "--mode=flops",
      "--batch_size=2", "--batch_size=4"]
  atomic_files.write_bytes(f"{ram}/d.cfg", b"--flagfile=a/top.cfg\n")
  with pytest.raises(ValueError, match=f"flagfile {ram}/a/top.cfg includes itself"):
    expand_flagfiles(["main.py", f"--flagfile={ram}/a/top.cfg"])
  gfile.remove(f"{ram}/c.cfg")
  with pytest.raises(ValueError, match=f"^flagfile {ram}/c.cfg does not exist \\(included from "
                                       f"{ram}/a/b/mid.cfg\\)$"):
    expand_flagfiles(["main.py", f"--flagfile={ram}/a/top.cfg"])
  with pytest.raises(ValueError, match="^flagfile nofs://x.cfg: File system scheme 'nofs' not"):
    expand_flagfiles(["main.py", "--flagfile=nofs://x.cfg"])


def test_an_unreachable_flagfile_url_is_one_error_line(monkeypatch):
  def unreachable(path):
    raise tf.errors.FailedPreconditionError(
        None, None, f"Could not resolve host\n\t when reading metadata of {path}")
  monkeypatch.setattr(atomic_files, "isfile", unreachable)
  with pytest.raises(ValueError) as error:
    expand_flagfiles(["main.py", "--flagfile=gs://bucket/x.cfg"])
  assert str(error.value) == ("flagfile gs://bucket/x.cfg: Could not resolve host when reading "
                              "metadata of gs://bucket/x.cfg")


def _write_png(path, array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  gfile.makedirs(os.path.dirname(path))  # ram:// lists only folders made as such
  with gfile.GFile(path, "wb") as f:
    f.write(buffer.getvalue())


@pytest.mark.usefixtures("no_local_writes")
def test_convert_and_verify_a_raw_copy_in_a_bucket(ram):
  """A Cityscapes-layout raw copy on ram:// converts to ram:// and verifies there; the flag checks
  read its dataset_info.json there too."""
  rng = np.random.default_rng(0)
  road, car = cityscapes.CLASSES[0][1], cityscapes.CLASSES[13][1]
  for split, count in (("train", 3), ("val", 2)):
    for index in range(count):
      stem = f"aachen_{index:06d}_000019"
      label = rng.choice(np.array([0, road, car], np.uint8), (6, 8))
      _write_png(f"{ram}/raw/gtFine/{split}/aachen/{stem}_gtFine_labelIds.png", label)
      _write_png(f"{ram}/raw/leftImg8bit/{split}/aachen/{stem}_leftImg8bit.png",
                 rng.integers(0, 255, (6, 8, 3), np.uint8))
  info = convert.convert("cityscapes", f"{ram}/raw", f"{ram}/tfrecords")
  assert info["splits"]["train"]["num_examples"] == 3
  assert _files(f"{ram}/tfrecords") == [
      "dataset_info.json", "train-00000-of-00001.tfrecord", "val-00000-of-00001.tfrecord"]
  assert verify_dataset.verify(f"{ram}/tfrecords") == []
  assert dataset_info.read_info(f"{ram}/tfrecords")["name"] == "cityscapes"
  with pytest.raises(FlagError, match=f"{ram}/tfrecords/dataset_info.json: the folder holds"):
    _settings("--dataset=ade20k", f"--data_dir={ram}/tfrecords", mode="eval")
  with pytest.raises(FlagError, match="no train-\\*.tfrecord shards"):
    _settings("--dataset=cityscapes", f"--data_dir={ram}/raw", mode="train")
  with pytest.raises(FlagError, match="is not a folder"):
    _settings("--dataset=cityscapes", f"--data_dir={ram}/missing", mode="eval")
  assert _settings("--dataset=cityscapes", f"--data_dir={ram}/tfrecords",
                   mode="train").train.data_dir == f"{ram}/tfrecords"


@pytest.mark.slow
@pytest.mark.usefixtures("no_local_writes")
def test_the_whole_chain_runs_in_a_bucket_and_writes_nothing_locally(ram):
  data, run = f"{ram}/data", f"{ram}/run"
  common = ["--dataset=builtin", f"--data_dir={data}", f"--model_dir={run}",
            "--backbone=resnet_test", "--encoder_filters=16", "--cae_car_filters=16",
            "--decoder_filters=16", "--builtin_num_train=8", "--builtin_num_val=4",
            "--crop_height=33", "--crop_width=33", "--batch_size=2", "--mixed_precision=none",
            "--optimizer=adamw", "--log_every=1", "--checkpoint_every=2",
            "--image_summary_every=2", "--eval_batch_size=2", "--shuffle_buffer=8"]

  weights = runs.run(_settings(*common, "--pretrain_steps=2", mode="pretrain"))
  assert weights["backbone_weights"] == pretrain.weights_path(run, "resnet_test")
  assert _files(f"{run}/pretrain") == ["resnet_test.weights.h5", "resnet_test.weights.h5.json"]
  pretrained = f"{run}/pretrain/resnet_test.weights.h5"
  with pytest.raises(FlagError, match="--backbone_weights"):
    _settings(*common, f"--backbone_weights={run}/missing.weights.h5", mode="train")

  assert runs.run(_settings(*common, f"--backbone_weights={pretrained}", "--train_steps=2",
                            "--eval_after_train=false", mode="train"))["step"] == 2
  # Written once the backbone has loaded the file, before the first step.
  assert atomic_files.read_json(f"{run}/checkpoints/backbone_weights.json") == {
      "backbone_weights": pretrained, "file": pretrained, "url": None,
      "sha256": hashlib.sha256(atomic_files.read_bytes(pretrained)).hexdigest()}
  assert tf.train.latest_checkpoint(f"{run}/checkpoints").endswith("ckpt-2")
  results = runs.run(_settings(*common, "--train_steps=4", "--predict_after_train",
                               "--export_after_train", mode="train"))
  assert results["step"] == 4  # resumed at step 2
  assert tf.train.latest_checkpoint(f"{run}/checkpoints").endswith("ckpt-4")
  assert gfile.glob(f"{run}/checkpoints/tb/events.out.tfevents.*")
  assert atomic_files.read_json(f"{run}/eval_results.json")["dataset"] == "builtin"
  assert gfile.exists(f"{run}/demo.png") and len(gfile.glob(f"{run}/predict_inputs/*.png")) == 4
  assert len(gfile.glob(f"{run}/predictions/overlay/*.png")) == 4

  evaluation = runs.run(_settings(*common, "--mode=eval", mode="eval"))
  assert 0.0 <= evaluation.mean_iou <= 1.0 and evaluation.num_images == 4
  summary = runs.run(_settings(*common, f"--predict_input={run}/predict_inputs/00*.png",
                               f"--predict_output_dir={ram}/more_predictions", mode="predict"))
  assert len(summary.processed) == 4
  assert len(gfile.glob(f"{ram}/more_predictions/class_map/*.png")) == 4
  export_dir = runs.run(_settings(*common, f"--export_dir={ram}/exports/b", mode="export"))
  assert export_dir == f"{ram}/exports/b/1"  # the log names it as given; TF Serving's version 1
  assert gfile.listdir(f"{ram}/exports") == ["b"]  # no temporary folder left
  assert gfile.listdir(f"{ram}/exports/b") == ["1"]
  served = tf.saved_model.load(export_dir).signatures["serving_default"](
      images=tf.zeros([1, 40, 50, 3], tf.uint8))["class_map"]
  assert served.shape == (1, 40, 50)
  assert atomic_files.read_json(f"{run}/export/1/export_info.json")["class_names"] == list(
      builtin.CLASS_NAMES)
  assert verify_dataset.verify(data) == []
  assert gfile.exists(records.info_path(data))
