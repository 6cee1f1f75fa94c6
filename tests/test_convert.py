"""Shard writer safety (resume, interruption) and the raw-layout converters' golden label maps."""

import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import io as scipy_io  # the MAT reader's independent reference

from datasets import (ade20k, builtin, coco_stuff, convert, core, matlab, pascal_context, records,
                      tfrecord)
from hfgd_tf.data import pipeline

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shards(directory, split="train"):
  return sorted(tf.io.gfile.glob(os.path.join(directory, records.finished_shard_pattern(split))))


def _stats(paths):
  return {path: (os.stat(path).st_mtime_ns, os.stat(path).st_ino) for path in paths}


def _read_all(pattern):
  """Every example of the converted shards, keyed by filename: (image uint8, label int)."""
  examples = {}
  for batch in pipeline.eval_dataset(pattern, 1, 128, 128):
    height, width = batch["height"][0].numpy(), batch["width"][0].numpy()
    image = np.round((batch["image"][0].numpy()[:height, :width] + 1) * 255 / 2).astype(np.uint8)
    examples[batch["filename"][0].numpy().decode()] = (image, batch["label"][0].numpy()[
        :height, :width])
  return examples


def _write_builtin(split, items, output_dir, **options):
  """Writes built-in work items as `datasets.convert` does, through builtin.load_example as it is
  now (tests replace it)."""
  return tfrecord.write_split(builtin.INFO, builtin.load_example, split, items, output_dir,
                              **options)


def test_default_shard_counts():
  assert tfrecord.default_num_shards(3) == 1
  assert tfrecord.default_num_shards(200) == 6
  assert tfrecord.default_num_shards(4998) == 16
  assert tfrecord.default_num_shards(118287) == 116


def test_rerun_keeps_finished_shards_and_replaces_a_stale_incomplete_one(tmp_path):
  items = builtin.work_items(0, "train", 12)
  _write_builtin("train", items, str(tmp_path), num_shards=4)
  shards = _shards(tmp_path)
  assert [os.path.basename(p) for p in shards] == [
      f"train-0000{k}-of-00004.tfrecord" for k in range(4)]
  with open(shards[2], "rb") as f:
    original = f.read()
  kept = _stats(shards[:2] + shards[3:])
  # An interrupted run: shard 2 never got renamed, a truncated temporary file is left behind.
  os.remove(shards[2])
  with open(shards[2] + records.INCOMPLETE_SUFFIX, "wb") as f:
    f.write(original[:100])
  assert len(_shards(tmp_path)) == 3  # the temporary file never looks finished
  _write_builtin("train", items, str(tmp_path), num_shards=4)
  assert _stats(shards[:2] + shards[3:]) == kept
  with open(shards[2], "rb") as f:
    assert f.read() == original
  assert not os.path.exists(shards[2] + records.INCOMPLETE_SUFFIX)


def test_a_failure_mid_shard_loses_nothing_written_and_leaves_no_half_shard(tmp_path, monkeypatch):
  items = builtin.work_items(0, "train", 12)
  load = builtin.load_example

  def failing_load(item):
    if item[2] == 7:
      raise core.ConversionError("cannot read broken_file_7.png")
    return load(item)

  monkeypatch.setattr(builtin, "load_example", failing_load)
  with pytest.raises(core.ConversionError, match="broken_file_7.png"):
    _write_builtin("train", items, str(tmp_path), num_shards=4)
  # Shards 0 and 1 (items 0..5) were finished before the failure; shard 2 (items 6..8) failed.
  finished = _shards(tmp_path)
  assert [os.path.basename(p)[:11] for p in finished] == ["train-00000", "train-00001"]
  assert not [name for name in os.listdir(tmp_path) if name.endswith(records.INCOMPLETE_SUFFIX)]
  kept = _stats(finished)
  monkeypatch.setattr(builtin, "load_example", load)
  _write_builtin("train", items, str(tmp_path), num_shards=4)
  assert len(_shards(tmp_path)) == 4
  assert _stats(finished) == kept


def test_another_shard_count_in_the_same_directory_is_refused(tmp_path):
  items = builtin.work_items(0, "train", 6)
  _write_builtin("train", items, str(tmp_path), num_shards=2)
  with pytest.raises(ValueError, match="another shard count"):
    _write_builtin("train", items, str(tmp_path), num_shards=3)


def test_parallel_workers_write_the_same_bytes_as_one_process(tmp_path):
  items = builtin.work_items(3, "val", 8)
  _write_builtin("val", items, str(tmp_path / "one"), num_shards=2)
  _write_builtin("val", items, str(tmp_path / "two"), num_shards=2, num_workers=2)
  for one, two in zip(_shards(tmp_path / "one", "val"), _shards(tmp_path / "two", "val")):
    with open(one, "rb") as f_one, open(two, "rb") as f_two:
      assert f_one.read() == f_two.read()


def test_records_round_trip_images_and_labels_losslessly(tmp_path):
  directory = builtin.ensure_builtin_dataset(str(tmp_path), seed=2, num_train=4, num_val=3)
  examples = _read_all(os.path.join(directory, "val-*.tfrecord"))
  assert sorted(examples) == ["val_00000", "val_00001", "val_00002"]
  for index in range(3):
    image, label = builtin.generate(2, "val", index)
    np.testing.assert_array_equal(examples[f"val_{index:05d}"][0], image)
    np.testing.assert_array_equal(examples[f"val_{index:05d}"][1], label)
  record = next(iter(tf.data.TFRecordDataset(_shards(directory, "val")[0])))
  keys = set(tf.train.Example.FromString(record.numpy()).features.feature)
  assert keys == {"image/encoded", "image/format", "image/height", "image/width", "image/channels",
                  "image/filename", "image/segmentation/class/encoded",
                  "image/segmentation/class/format"}


# ---------------------------------------------------------------------------------------------
# Raw layouts. Fixtures are tiny files written here; expected masks are computed by hand.


def _save_image(path, height, width, seed=0, fmt="JPEG"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
  with open(path, "rb") as f:
    return f.read()


def _save_label(path, values, mode="L"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  label = Image.fromarray(np.asarray(values, np.uint8), mode="L")
  if mode == "P":
    label = label.convert("P")  # palette PNG: the stored indices are the values
    label.putpalette([channel for rgb in core.voc_palette(256) for channel in rgb])
  label.save(path)


def _mat_element(element_type, payload):
  """One MAT v5 data element: 8-byte tag, payload padded to 8 bytes."""
  padding = b"\0" * (-len(payload) % 8)
  return struct.pack("<II", element_type, len(payload)) + payload + padding


def _mat_matrix(name, array, array_class, storage_type, storage_dtype):
  """A miMATRIX element holding `array` (column-major, like MATLAB)."""
  content = (_mat_element(6, struct.pack("<II", array_class, 0))
             + _mat_element(5, struct.pack("<2i", *array.shape))
             + _mat_element(1, name.encode())
             + _mat_element(storage_type, array.astype(storage_dtype).tobytes(order="F")))
  return _mat_element(14, content)


def _write_mat(path, elements, compress):
  """A MAT v5 file (128-byte header then elements, each optionally zlib-compressed)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  header = b"MATLAB 5.0 MAT-file, written by the hfgd-tf tests".ljust(116) + b"\0" * 8
  header += struct.pack("<H", 0x0100) + b"IM"
  body = b""
  for element in elements:
    if compress:
      packed = zlib.compress(element)
      body += struct.pack("<II", 15, len(packed)) + packed
    else:
      body += element
  with open(path, "wb") as f:
    f.write(header + body)


def _records(directory, split):
  """filename -> tf.train.Example features of every converted record of `split`."""
  examples = {}
  for path in _shards(directory, split):
    for record in tf.data.TFRecordDataset(path):
      feature = tf.train.Example.FromString(record.numpy()).features.feature
      examples[feature["image/filename"].bytes_list.value[0].decode()] = feature
  return examples


def _label_of(feature):
  return tf.io.decode_png(feature["image/segmentation/class/encoded"].bytes_list.value[0])[
      ..., 0].numpy()


PC_MAT_LABEL = np.array([[0, 2, 9, 458, 1],
                         [459, 284, 3, 2, 2],
                         [397, 440, 65, 100, 324],
                         [2, 2, 2, 2, 2]])
PC_MAT_EXPECTED = np.array([[255, 0, 1, 58, 255],
                            [255, 36, 255, 0, 0],
                            [49, 55, 14, 255, 40],
                            [0, 0, 0, 0, 0]])


@pytest.mark.parametrize("compress", [False, True])
def test_mat_reader_reads_label_maps_and_skips_other_variables(tmp_path, compress):
  path = str(tmp_path / "x.mat")
  other = _mat_matrix("Other", np.ones((2, 2)), 6, 9, "<f8")
  _write_mat(path, [other, _mat_matrix("LabelMap", PC_MAT_LABEL, 11, 4, "<u2")], compress)
  np.testing.assert_array_equal(matlab.load_variable(path, "LabelMap"), PC_MAT_LABEL)
  # MATLAB often stores a double array in a narrower integer type; the class decides the dtype.
  _write_mat(path, [_mat_matrix("LabelMap", PC_MAT_LABEL, 6, 4, "<u2")], compress)
  loaded = matlab.load_variable(path, "LabelMap")
  assert loaded.dtype == np.float64
  np.testing.assert_array_equal(loaded, PC_MAT_LABEL)
  with pytest.raises(matlab.MatFileError, match="no variable Missing"):
    matlab.load_variable(path, "Missing")


def test_mat_reader_agrees_with_scipy(tmp_path):
  path = str(tmp_path / "s.mat")
  scipy_io.savemat(path, {"LabelMap": PC_MAT_LABEL.astype(np.uint16), "x": 3.0},
                   do_compression=True)
  np.testing.assert_array_equal(matlab.load_variable(path, "LabelMap"), PC_MAT_LABEL)


def _pascal_official(raw):
  voc = os.path.join(raw, "VOCdevkit", "VOC2010")
  jpeg = _save_image(os.path.join(voc, "JPEGImages", "2008_000002.jpg"), 4, 5)
  _save_image(os.path.join(voc, "JPEGImages", "2008_000003.jpg"), 3, 3, seed=1)
  os.makedirs(os.path.join(voc, "ImageSets", "Main"))
  with open(os.path.join(voc, "ImageSets", "Main", "train.txt"), "w") as f:
    f.write("2008_000002\n2008_000003\n")
  _write_mat(os.path.join(raw, "trainval", "2008_000002.mat"),
             [_mat_matrix("LabelMap", PC_MAT_LABEL, 11, 4, "<u2")], compress=True)
  _write_mat(os.path.join(raw, "trainval", "2008_000003.mat"),
             [_mat_matrix("LabelMap", np.full((3, 3), 360), 6, 4, "<u2")], compress=False)
  with open(os.path.join(raw, "labels.txt"), "w") as f:
    f.write("".join(f"{raw_id}: {name}\n" for name, raw_id in pascal_context.CLASSES_459))
  return jpeg


def test_pascal_context_official_mat_layout_golden(tmp_path):
  raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
  jpeg = _pascal_official(raw)
  info = convert.convert("pascal_context", raw, out, splits=["train"])
  assert info["splits"]["train"]["num_examples"] == 2 and info["num_classes"] == 59
  written = _records(out, "train")
  np.testing.assert_array_equal(_label_of(written["2008_000002"]), PC_MAT_EXPECTED)
  np.testing.assert_array_equal(_label_of(written["2008_000003"]), np.full((3, 3), 46))  # sky
  # The source JPEG is stored as is (lossless with respect to the source).
  assert written["2008_000002"]["image/encoded"].bytes_list.value[0] == jpeg
  assert written["2008_000002"]["image/format"].bytes_list.value[0] == b"jpeg"
  assert written["2008_000002"]["image/height"].int64_list.value[0] == 4


def test_pascal_context_rejects_a_different_labels_txt(tmp_path):
  raw = str(tmp_path / "raw")
  _pascal_official(raw)
  with open(os.path.join(raw, "labels.txt"), "w") as f:
    f.write("1: accordion\n2: airplane\n")
  with pytest.raises(core.ConversionError, match="labels.txt.*id 2"):
    convert.convert("pascal_context", raw, str(tmp_path / "out"), splits=["train"])


def test_pascal_context_checks_the_labels_txt_beside_trainval_in_voc2010(tmp_path):
  """`tar -xzf trainval.tar.gz -C VOCdevkit/VOC2010` puts trainval/ and labels.txt there."""
  raw = str(tmp_path / "raw")
  _pascal_official(raw)
  voc = os.path.join(raw, "VOCdevkit", "VOC2010")
  shutil.move(os.path.join(raw, "trainval"), os.path.join(voc, "trainval"))
  shutil.move(os.path.join(raw, "labels.txt"), os.path.join(voc, "labels.txt"))
  info = convert.convert("pascal_context", raw, str(tmp_path / "out"), splits=["train"])
  assert info["splits"]["train"]["num_examples"] == 2
  with open(os.path.join(voc, "labels.txt"), "w") as f:
    f.write("1: accordion\n2: airplane\n")
  with pytest.raises(core.ConversionError, match="VOC2010/labels.txt: id 2 is 'airplane'"):
    convert.convert("pascal_context", raw, str(tmp_path / "out2"), splits=["train"])


def _pascal_png59(raw, label, mode="L", labels_file=pascal_context.AUTHORS_LABELS_FILE,
                  labels_name="labels.txt", key="a"):
  """The 59-class PNG layout with one val example and, unless None, a copy of `labels_file`."""
  _save_image(os.path.join(raw, "images", f"{key}.jpg"), *np.shape(label))
  _save_label(os.path.join(raw, "labels", f"{key}.png"), label, mode)
  with open(os.path.join(raw, "val.txt"), "w") as f:
    f.write(key)
  if labels_file is not None:
    shutil.copy(labels_file, os.path.join(raw, labels_name))


def test_the_authors_class_list_is_our_order():
  assert pascal_context.read_class_list(pascal_context.AUTHORS_LABELS_FILE) == dict(
      enumerate(pascal_context.INFO.class_names, 1))


@pytest.mark.parametrize("mode", ["L", "P"])
def test_pascal_context_preprocessed_layout_golden(tmp_path, mode):
  raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
  _pascal_png59(raw, [[0, 1, 59, 30], [2, 0, 58, 15]], mode)
  convert.convert("pascal_context", raw, out, splits=["val"])
  np.testing.assert_array_equal(_label_of(_records(out, "val")["a"]),
                                [[255, 0, 58, 29], [1, 255, 57, 14]])


def test_pascal_context_png59_is_remapped_by_the_class_list_it_ships_with(tmp_path):
  """A copy numbering the classes in reverse (59 = aeroplane), as plain names after background,
  spelled differently: values follow the names, not our order."""
  names = list(pascal_context.INFO.class_names)[::-1]
  names[names.index("aeroplane")] = "Airplane"
  names[names.index("pottedplant")] = "potted plant"
  list_file = tmp_path / "59_labels.txt"
  list_file.write_text("background\n" + "\n".join(names) + "\n")
  raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
  _pascal_png59(raw, [[0, 1, 59, 20]], labels_file=str(list_file), labels_name="59_labels.txt")
  convert.convert("pascal_context", raw, out, splits=["val"])
  np.testing.assert_array_equal(_label_of(_records(out, "val")["a"]), [[255, 58, 0, 39]])


@pytest.mark.parametrize("content,message", [
    (None, r"no 59_labels.txt or labels.txt in .* gives the class of each label value; for the "
           r"authors' preprocessed copy .* copy .*pascal_context_59_labels.txt there"),
    ("".join(f"{raw_id}: {name}\n" for name, raw_id in pascal_context.CLASSES_459[:58])
     + "1: accordion\n", r"labels.txt: class 'accordion' \(id 1\) is not one of the 59"),
    ("".join(f"{i}: {name}\n" for i, (name, _) in enumerate(pascal_context.CLASSES_459[:58], 1)),
     r"labels.txt lists 58 of the 59 classes; missing wood"),
    ("1: aeroplane\n1: bag\n", r"labels.txt: id 1 is listed twice"),
])
def test_pascal_context_png59_without_its_class_list_is_refused(tmp_path, content, message):
  raw = str(tmp_path / "raw")
  _pascal_png59(raw, [[0, 1]], labels_file=None)
  if content is not None:
    (tmp_path / "raw" / "labels.txt").write_text(content)
  with pytest.raises(core.ConversionError, match=message):
    convert.convert("pascal_context", raw, str(tmp_path / "out"), splits=["val"])
  assert not os.path.exists(tmp_path / "out")


def test_pascal_context_mmseg_layout_golden(tmp_path):
  """mmseg's pascal_context.py output: SegmentationClassContext + ImageSets/SegmentationContext."""
  raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
  voc = os.path.join(raw, "VOCdevkit", "VOC2010")
  _save_image(os.path.join(voc, "JPEGImages", "2008_000008.jpg"), 2, 3)
  _save_image(os.path.join(voc, "JPEGImages", "2008_000009.jpg"), 2, 3)  # not in the split
  _save_label(os.path.join(voc, "SegmentationClassContext", "2008_000008.png"),
              [[0, 1, 59], [37, 2, 0]])
  os.makedirs(os.path.join(voc, "ImageSets", "SegmentationContext"))
  with open(os.path.join(voc, "ImageSets", "SegmentationContext", "val.txt"), "w") as f:
    f.write("2008_000008\n")
  convert.convert("pascal_context", raw, out, splits=["val"])
  records = _records(out, "val")
  assert list(records) == ["2008_000008"]
  np.testing.assert_array_equal(_label_of(records["2008_000008"]), [[255, 0, 58], [36, 1, 255]])


COCO_RAW = np.array([[0, 10, 11, 12, 24, 25],
                     [26, 90, 91, 181, 255, 44],
                     [65, 67, 68, 70, 82, 92]])
COCO_EXPECTED = np.array([[0, 10, 255, 11, 23, 255],
                          [24, 255, 80, 170, 255, 255],
                          [255, 255, 255, 255, 255, 81]])


def test_coco_stuff_182_to_171_golden(tmp_path):
  raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
  _save_image(os.path.join(raw, "val2017", "000000000139.jpg"), 3, 6)
  _save_label(os.path.join(raw, "stuffthingmaps_trainval2017", "val2017", "000000000139.png"),
              COCO_RAW)
  convert.convert("coco_stuff", raw, out, splits=["val"])
  np.testing.assert_array_equal(_label_of(_records(out, "val")["000000000139"]), COCO_EXPECTED)
  assert coco_stuff.CLASS_NAMES[80] == "banner" and coco_stuff.CLASS_NAMES[170] == "wood"


@pytest.mark.parametrize("images,labels", [
    ("images/val2017", "annotations/val2017"),  # cocostuff README and mmseg (unzip -d images/ ...)
    ("val2017", "val2017"),  # the stuffthingmaps zip unpacked in place, beside the images
])
@pytest.mark.parametrize("mmseg_prepared", [False, True])
def test_coco_stuff_official_layouts_golden(tmp_path, images, labels, mmseg_prepared):
  raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
  _save_image(os.path.join(raw, images, "000000000139.jpg"), 3, 6)
  _save_label(os.path.join(raw, labels, "000000000139.png"), COCO_RAW)
  if mmseg_prepared:  # its converter's 171-class map beside the original, here deliberately wrong
    _save_label(os.path.join(raw, labels, "000000000139_labelTrainIds.png"), np.zeros((3, 6)))
  convert.convert("coco_stuff", raw, out, splits=["val"])
  records = _records(out, "val")
  assert list(records) == ["000000000139"]
  np.testing.assert_array_equal(_label_of(records["000000000139"]), COCO_EXPECTED)


def test_coco_stuff_mmseg_train_ids_alone_are_read_as_train_ids(tmp_path):
  raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
  _save_image(os.path.join(raw, "images", "val2017", "5.jpg"), 1, 4)
  _save_label(os.path.join(raw, "annotations", "val2017", "5_labelTrainIds.png"),
              [[0, 170, 255, 80]])
  convert.convert("coco_stuff", raw, out, splits=["val"])
  np.testing.assert_array_equal(_label_of(_records(out, "val")["5"]), [[0, 170, 255, 80]])
  _save_label(os.path.join(raw, "annotations", "val2017", "5_labelTrainIds.png"), [[0, 171, 1, 2]])
  with pytest.raises(core.ConversionError, match=r"5_labelTrainIds\.png has values \[171\]"):
    convert.convert("coco_stuff", raw, str(tmp_path / "out2"), splits=["val"])


def test_coco_stuff_without_label_maps_names_the_folders_looked_in(tmp_path):
  os.makedirs(tmp_path / "images" / "val2017")
  with pytest.raises(core.ConversionError, match=r"none of .*annotations/val2017, "
                                                 r".*stuffthingmaps_trainval2017/val2017, "
                                                 r".*val2017 holds stuffthingmaps PNGs"):
    convert.convert("coco_stuff", str(tmp_path), str(tmp_path / "out"), splits=["val"])


CITYSCAPES_RAW = np.array([[0, 1, 2, 3, 4, 5, 6, 7],
                           [8, 9, 10, 11, 12, 13, 14, 15],
                           [16, 17, 18, 19, 20, 21, 22, 23],
                           [24, 25, 26, 27, 28, 29, 30, 31],
                           [32, 33, 255, 7, 7, 7, 7, 7]])
CITYSCAPES_EXPECTED = np.array([[255, 255, 255, 255, 255, 255, 255, 0],
                                [1, 255, 255, 2, 3, 4, 255, 255],
                                [255, 5, 255, 6, 7, 8, 9, 10],
                                [11, 12, 13, 14, 15, 255, 255, 16],
                                [17, 18, 255, 0, 0, 0, 0, 0]])


def _cityscapes(raw, city="aachen", stem="aachen_000000_000019", label=CITYSCAPES_RAW,
                image_size=(5, 8)):
  image = os.path.join(raw, "leftImg8bit", "val", city, f"{stem}_leftImg8bit.png")
  _save_image(image, *image_size, fmt="PNG")
  _save_label(os.path.join(raw, "gtFine", "val", city, f"{stem}_gtFine_labelIds.png"), label)


def test_cityscapes_label_ids_to_train_ids_golden(tmp_path):
  raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
  _cityscapes(raw)
  convert.convert("cityscapes", raw, out, splits=["val"])
  record = _records(out, "val")["aachen_000000_000019"]
  np.testing.assert_array_equal(_label_of(record), CITYSCAPES_EXPECTED)
  assert record["image/format"].bytes_list.value[0] == b"png"


def test_cityscapes_label_ids_win_over_train_ids_which_are_read_when_alone(tmp_path):
  """A tree prepared by createTrainIdLabelImgs or mmseg holds both maps of each image."""
  raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
  _cityscapes(raw)
  train_ids = os.path.join(raw, "gtFine", "val", "aachen",
                           "aachen_000000_000019_gtFine_labelTrainIds.png")
  _save_label(train_ids, np.full((5, 8), 3))  # deliberately not the labelIds' content
  convert.convert("cityscapes", raw, out, splits=["val"])
  records = _records(out, "val")
  assert list(records) == ["aachen_000000_000019"]
  np.testing.assert_array_equal(_label_of(records["aachen_000000_000019"]), CITYSCAPES_EXPECTED)
  os.remove(os.path.join(raw, "gtFine", "val", "aachen",
                         "aachen_000000_000019_gtFine_labelIds.png"))
  _save_label(train_ids, CITYSCAPES_EXPECTED)
  convert.convert("cityscapes", raw, str(tmp_path / "out2"), splits=["val"])
  np.testing.assert_array_equal(
      _label_of(_records(str(tmp_path / "out2"), "val")["aachen_000000_000019"]),
      CITYSCAPES_EXPECTED)
  _save_label(train_ids, np.full((5, 8), 19))
  with pytest.raises(core.ConversionError, match=r"labelTrainIds\.png has values \[19\]"):
    convert.convert("cityscapes", raw, str(tmp_path / "out3"), splits=["val"])
ADE_RAW = np.array([[0, 1, 2, 150],
                    [149, 75, 0, 13]])
ADE_EXPECTED = np.array([[255, 0, 1, 149],
                         [148, 74, 255, 12]])


@pytest.mark.parametrize("nested", [False, True])
def test_ade20k_challenge_layout_golden(tmp_path, nested):
  raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
  root = os.path.join(raw, "ADEChallengeData2016") if nested else raw
  jpeg = _save_image(os.path.join(root, "images", "validation", "ADE_val_00000001.jpg"), 2, 4)
  _save_label(os.path.join(root, "annotations", "validation", "ADE_val_00000001.png"), ADE_RAW)
  _save_image(os.path.join(root, "images", "training", "ADE_train_00000001.jpg"), 2, 4)
  _save_label(os.path.join(root, "annotations", "training", "ADE_train_00000001.png"), ADE_RAW)
  info = convert.convert("ade20k", raw, out, splits=["val"])
  assert info["num_classes"] == 150 and info["splits"]["val"]["num_examples"] == 1
  record = _records(out, "val")["ADE_val_00000001"]
  np.testing.assert_array_equal(_label_of(record), ADE_EXPECTED)
  assert record["image/encoded"].bytes_list.value[0] == jpeg
  assert not _shards(out, "train")  # only the validation folder was read
  assert ade20k.CLASS_NAMES[0] == "wall" and ade20k.CLASS_NAMES[149] == "flag"
  assert ade20k.INFO.palette[12] == (150, 5, 61)  # person


def test_missing_image_for_a_label_names_both_files(tmp_path):
  raw = str(tmp_path / "raw")
  _save_label(os.path.join(raw, "stuffthingmaps_trainval2017", "val2017", "42.png"), [[0]])
  os.makedirs(os.path.join(raw, "val2017"))
  with pytest.raises(core.ConversionError, match=r"missing image .*val2017/42\.jpg for label "
                                                 r".*stuffthingmaps_trainval2017/val2017/42\.png"):
    convert.convert("coco_stuff", raw, str(tmp_path / "out"), splits=["val"])


def test_size_mismatch_names_the_files(tmp_path):
  raw = str(tmp_path / "raw")
  _cityscapes(raw, image_size=(5, 9))
  with pytest.raises(core.ConversionError, match=r"size mismatch: image .*aachen_000000_000019_"
                                                 r"leftImg8bit\.png is 5x9 .*labelIds\.png is 5x8"):
    convert.convert("cityscapes", raw, str(tmp_path / "out"), splits=["val"])


@pytest.mark.parametrize("dataset,bad_value", [("cityscapes", 34), ("coco_stuff", 182),
                                               ("pascal_context", 60), ("ade20k", 151)])
def test_unknown_label_value_names_the_file(tmp_path, dataset, bad_value):
  raw = str(tmp_path / "raw")
  if dataset == "cityscapes":
    _cityscapes(raw, label=np.full((5, 8), bad_value))
    label_name = r"aachen_000000_000019_gtFine_labelIds\.png"
  elif dataset == "coco_stuff":
    _save_image(os.path.join(raw, "val2017", "7.jpg"), 2, 2)
    _save_label(os.path.join(raw, "stuffthingmaps_trainval2017", "val2017", "7.png"),
                [[0, bad_value], [1, 2]])
    label_name = r"val2017/7\.png"
  elif dataset == "ade20k":
    _save_image(os.path.join(raw, "images", "validation", "d.jpg"), 2, 2)
    _save_label(os.path.join(raw, "annotations", "validation", "d.png"), [[0, bad_value], [1, 2]])
    label_name = r"annotations/validation/d\.png"
  else:
    _pascal_png59(raw, [[0, bad_value], [1, 2]], key="b")
    label_name = r"labels/b\.png"
  with pytest.raises(core.ConversionError,
                     match=rf"{label_name} has values \[{bad_value}\] that are neither"):
    convert.convert(dataset, raw, str(tmp_path / "out"), splits=["val"])


def test_unreadable_files_are_named(tmp_path):
  raw = str(tmp_path / "raw")
  _pascal_png59(raw, np.ones((8, 8)), key="c")
  with open(os.path.join(raw, "images", "c.jpg"), "r+b") as f:
    f.truncate(40)  # a cut-off JPEG
  with pytest.raises(core.ConversionError, match=r"unreadable image file .*images/c\.jpg"):
    convert.convert("pascal_context", raw, str(tmp_path / "out"), splits=["val"])
  official = str(tmp_path / "official")
  _pascal_official(official)
  with open(os.path.join(official, "trainval", "2008_000003.mat"), "r+b") as f:
    f.truncate(140)
  with pytest.raises(core.ConversionError, match=r"unreadable label file .*2008_000003\.mat"):
    convert.convert("pascal_context", official, str(tmp_path / "out2"), splits=["train"])


def test_cli_reports_one_clear_error_and_keeps_finished_shards(tmp_path):
  raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
  _cityscapes(raw, stem="aachen_000000_000001")
  _cityscapes(raw, stem="aachen_000000_000002", label=np.full((5, 8), 40))
  result = subprocess.run(
      [sys.executable, "-m", "datasets.convert", "--dataset=cityscapes", f"--raw_dir={raw}",
       f"--output_dir={out}", "--splits=val", "--num_shards=2", "--num_workers=1"],
      capture_output=True, text=True, cwd=REPO_ROOT, check=False)
  assert result.returncode == 1
  assert "aachen_000000_000002_gtFine_labelIds.png has values [40]" in result.stderr
  assert "Traceback" not in result.stderr
  assert [os.path.basename(p) for p in _shards(out, "val")] == ["val-00000-of-00002.tfrecord"]
  assert not os.path.exists(os.path.join(out, records.INFO_FILENAME))
