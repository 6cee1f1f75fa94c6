"""PASCAL-Context, 59 classes (4998 train / 5105 val, the VOC2010 train/val split).

Two raw layouts are accepted (detected by the presence of `labels/`):

* Official release: VOC2010 (`JPEGImages/`, `ImageSets/Main/{train,val}.txt`, directly in raw_dir or
  under `VOC2010/` or `VOCdevkit/VOC2010/`) plus PASCAL-Context's `trainval/<id>.mat` (459-class
  `LabelMap`, 1-based ids of `labels.txt`). The 59 classes keep their 459-class ids below; every
  other id (and 0) becomes ignore. A `labels.txt` in raw_dir is checked against the table.
* The authors' preprocessed copy (iDS layout): `images/<id>.jpg`, `labels/<id>.png` with 0 = ignore
  and 1..59 = classes, `train.txt` / `val.txt`.

Either way the stored labels are 0..58 and 255.
"""

import os
import re

import numpy as np

from datasets import core, matlab
from hfgd_tf.config import IGNORE_LABEL

# (name, id in the 459-class labels.txt), in the standard 59-class order (alphabetical).
CLASSES_459 = (
    ("aeroplane", 2), ("bag", 9), ("bed", 18), ("bedclothes", 19), ("bench", 22),
    ("bicycle", 23), ("bird", 25), ("boat", 31), ("book", 33), ("bottle", 34), ("building", 44),
    ("bus", 45), ("cabinet", 46), ("car", 59), ("cat", 65), ("ceiling", 68), ("chair", 72),
    ("cloth", 80), ("computer", 85), ("cow", 98), ("cup", 104), ("curtain", 105), ("dog", 113),
    ("door", 115), ("fence", 144), ("floor", 158), ("flower", 159), ("food", 162),
    ("grass", 187), ("ground", 189), ("horse", 207), ("keyboard", 220), ("light", 232),
    ("motorbike", 258), ("mountain", 259), ("mouse", 260), ("person", 284), ("plate", 295),
    ("platform", 296), ("pottedplant", 308), ("road", 324), ("rock", 326), ("sheep", 347),
    ("shelves", 349), ("sidewalk", 354), ("sign", 355), ("sky", 360), ("snow", 366),
    ("sofa", 368), ("table", 397), ("track", 415), ("train", 416), ("tree", 420),
    ("truck", 424), ("tvmonitor", 427), ("wall", 440), ("water", 445), ("window", 454),
    ("wood", 458))
NUM_FULL_CLASSES = 459

INFO = core.DatasetInfo(
    name="pascal_context",
    num_classes=len(CLASSES_459),
    class_names=tuple(name for name, _ in CLASSES_459),
    palette=core.voc_palette(len(CLASSES_459) + 1)[1:],
    split_sizes={"train": 4998, "val": 5105},
    crop_size=(513, 513),
    eval_size=(513, 513),
    ids_ignore_label=0,
)

# Official .mat: 459-class id -> 0..58; 0 and the other 400 ids -> ignore.
_MAT_LUT = core.build_lut(
    {**{raw: IGNORE_LABEL for raw in range(NUM_FULL_CLASSES + 1)},
     **{raw: index for index, (_, raw) in enumerate(CLASSES_459)}},
    size=NUM_FULL_CLASSES + 1)
# Preprocessed PNG: 0 -> ignore, 1..59 -> 0..58.
_PNG_LUT = core.build_lut(
    {0: IGNORE_LABEL, **{raw: raw - 1 for raw in range(1, len(CLASSES_459) + 1)}})


def _voc_root(raw_dir):
  for candidate in (raw_dir, os.path.join(raw_dir, "VOC2010"),
                    os.path.join(raw_dir, "VOCdevkit", "VOC2010")):
    if os.path.isdir(os.path.join(candidate, "JPEGImages")):
      return candidate
  raise core.ConversionError(f"no JPEGImages/ under {raw_dir} (nor VOC2010/, VOCdevkit/VOC2010/)")


def check_labels_txt(path):
  """Checks that the release's `labels.txt` ("<id>: <name>" lines) agrees with CLASSES_459."""
  names = {}
  for line in core.read_file(path).decode("utf-8").splitlines():
    match = re.match(r"\s*(\d+)\s*:\s*(.+?)\s*$", line)
    if match:
      names[int(match.group(1))] = match.group(2)
  for name, raw in CLASSES_459:
    if names.get(raw) != name:
      raise core.ConversionError(f"{path}: id {raw} is {names.get(raw)!r}, expected {name!r}; "
                                 "this is not the PASCAL-Context 459-class list")


def _official_examples(raw_dir, split):
  voc_root = _voc_root(raw_dir)
  mat_dir = next((d for d in (os.path.join(raw_dir, "trainval"), os.path.join(voc_root, "trainval"))
                  if os.path.isdir(d)), None)
  if mat_dir is None:
    raise core.ConversionError(f"no PASCAL-Context trainval/ (the .mat label maps) in {raw_dir}")
  if os.path.isfile(os.path.join(raw_dir, "labels.txt")):
    check_labels_txt(os.path.join(raw_dir, "labels.txt"))
  split_file = os.path.join(voc_root, "ImageSets", "Main", f"{split}.txt")
  core.require_file(split_file, "split list")
  examples = []
  for image_id in core.read_id_list(split_file):
    label_path = os.path.join(mat_dir, f"{image_id}.mat")
    image_path = os.path.join(voc_root, "JPEGImages", f"{image_id}.jpg")
    core.require_file(label_path, "label", for_path=f"image id {image_id} in {split_file}")
    core.require_file(image_path, "image", for_path=f"label {label_path}")
    examples.append(core.RawExample(image_id, image_path, label_path))
  return examples


def _preprocessed_examples(raw_dir, split):
  split_file = os.path.join(raw_dir, f"{split}.txt")
  core.require_file(split_file, "split list")
  examples = []
  for image_id in core.read_id_list(split_file):
    label_path = os.path.join(raw_dir, "labels", f"{image_id}.png")
    image_path = os.path.join(raw_dir, "images", f"{image_id}.jpg")
    core.require_file(label_path, "label", for_path=f"image id {image_id} in {split_file}")
    core.require_file(image_path, "image", for_path=f"label {label_path}")
    examples.append(core.RawExample(image_id, image_path, label_path))
  return examples


def list_examples(raw_dir, split):
  if os.path.isdir(os.path.join(raw_dir, "labels")):
    examples = _preprocessed_examples(raw_dir, split)
  else:
    examples = _official_examples(raw_dir, split)
  core.check_unique_keys(examples)
  return examples


def load_example(example: core.RawExample) -> core.EncodedExample:
  if example.label_path.endswith(".mat"):
    try:
      raw = matlab.load_variable(example.label_path, "LabelMap")
    except (OSError, ValueError, IndexError, KeyError) as e:  # struct.error is a ValueError
      raise core.ConversionError(f"unreadable label file {example.label_path}: {e}") from e
    fractional = raw.dtype.kind == "f" and bool((raw != np.round(raw)).any())
    if raw.ndim != 2 or fractional or (raw.size and raw.min() < 0):
      raise core.ConversionError(f"label file {example.label_path}: LabelMap must be a 2-D map of "
                                 f"class ids, got {raw.dtype} {raw.shape}")
    label = core.map_label(raw.astype(int), _MAT_LUT, example.label_path)
  else:
    label = core.map_label(core.load_label_png(example.label_path), _PNG_LUT, example.label_path)
  return core.encode_pair(example.key, example.image_path, label, example.label_path)
