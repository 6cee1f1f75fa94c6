"""PASCAL-Context, 59 classes (4998 train / 5105 val, the VOC2010 train/val split).

Three raw layouts, each as its own instructions unpack it (commands in docs/datasets.md):

* Official release: VOC2010 (`JPEGImages/`, `ImageSets/Main/{train,val}.txt`, directly in raw_dir or
  under `VOC2010/` or `VOCdevkit/VOC2010/`) plus PASCAL-Context's `trainval/<id>.mat` (459-class
  `LabelMap`, 1-based ids of `labels.txt`) in raw_dir or the VOC2010 folder. The 59 classes keep
  their 459-class ids below; every other id (and 0) becomes ignore. A `labels.txt` beside
  `trainval/` or in raw_dir is checked against the table.
* mmseg's conversion of it: `SegmentationClassContext/<id>.png` and
  `ImageSets/SegmentationContext/{train,val}.txt` in the VOC2010 folder; 0 = background (ignore),
  1..59 = the 59 classes in increasing 459-class id, which is our (alphabetical) order.
* 59-class PNGs with their own class list (the authors' preprocessed iDS copy, or the release's
  59_context_labels with its `59_labels.txt`): `images/<id>.jpg`, `labels/<id>.png`,
  `train.txt` / `val.txt`, and `59_labels.txt` or `labels.txt` in raw_dir giving the class of each
  value ("<id>: <name>" lines, or one name a line). The values are remapped to our order by name;
  a list that is not the 59 classes, or no list at all, is refused: the order is never guessed.
  For the authors' copy (alphabetical, 0 = background) copy `AUTHORS_LABELS_FILE` there.

Any way the stored labels are 0..58 and 255.
"""

import functools
import os
import re

import numpy as np

from datasets import core, matlab
from hfgd_tf import atomic_files
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
# mmseg's SegmentationClassContext PNG: 0 -> ignore, 1..59 -> 0..58.
_PNG_LUT = core.build_lut(
    {0: IGNORE_LABEL, **{raw: raw - 1 for raw in range(1, len(CLASSES_459) + 1)}})
# Class lists a 59-class PNG copy may ship with, in the order they are looked for.
LABELS_FILES = ("59_labels.txt", "labels.txt")
# Our order as such a list (the authors' iDS copy uses it).
AUTHORS_LABELS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                   "pascal_context_59_labels.txt")
# Spellings of our class names in other lists, after `_normalized`.
_NAME_ALIASES = {"airplane": "aeroplane", "diningtable": "table", "motorcycle": "motorbike"}


def _voc_root(raw_dir):
  for candidate in (raw_dir, os.path.join(raw_dir, "VOC2010"),
                    os.path.join(raw_dir, "VOCdevkit", "VOC2010")):
    if atomic_files.gfile().isdir(os.path.join(candidate, "JPEGImages")):
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


def _normalized(name):
  return re.sub(r"[\s_/-]", "", name.lower())


def read_class_list(path):
  """{value: name} from a class list: "<id>: <name>" (or "<id> <name>") lines, or one name a line
  (values 1, 2, ...; 0, 1, ... when the first name is background)."""
  lines = [line.strip() for line in core.read_file(path).decode("utf-8").splitlines()
           if line.strip()]
  numbered = [re.match(r"(\d+)\s*[:\s]\s*(\S.*)$", line) for line in lines]
  if not lines or (any(numbered) and not all(numbered)):
    raise core.ConversionError(f"{path}: expected '<id>: <name>' lines or one name a line")
  if not any(numbered):
    start = 0 if _normalized(lines[0]) == "background" else 1
    return dict(enumerate(lines, start))
  classes = {}
  for match in numbered:
    value = int(match.group(1))
    if value in classes:
      raise core.ConversionError(f"{path}: id {value} is listed twice")
    classes[value] = match.group(2)
  return classes


@functools.lru_cache(maxsize=None)
def png_lut(labels_file):
  """Lookup table of 59-class PNGs whose values `labels_file` names: each listed class -> our
  index, background (and 0 when unlisted) -> ignore. Refuses a list that is not the 59 classes."""
  ours = {name: index for index, name in enumerate(INFO.class_names)}
  mapping, seen = {}, {}
  for value, name in sorted(read_class_list(labels_file).items()):
    if value > 254:
      raise core.ConversionError(f"{labels_file}: id {value} does not fit an 8-bit label PNG")
    key = _NAME_ALIASES.get(_normalized(name), _normalized(name))
    if key == "background":
      mapping[value] = IGNORE_LABEL
      continue
    if key not in ours:
      raise core.ConversionError(
          f"{labels_file}: class {name!r} (id {value}) is not one of the 59 PASCAL-Context "
          "classes; labels/*.png need the list of exactly those")
    if key in seen:
      raise core.ConversionError(f"{labels_file}: {name!r} is listed twice (ids {seen[key]} and "
                                 f"{value})")
    seen[key] = value
    mapping[value] = ours[key]
  missing = [name for name in ours if name not in seen]
  if missing:
    raise core.ConversionError(f"{labels_file} lists {len(seen)} of the 59 classes; missing "
                               f"{', '.join(missing[:5])}")
  mapping.setdefault(0, IGNORE_LABEL)
  return core.build_lut(mapping)


def _mat_dir(raw_dir, voc_root):
  return next((d for d in (os.path.join(raw_dir, "trainval"), os.path.join(voc_root, "trainval"))
               if atomic_files.gfile().isdir(d)), None)


def _official_examples(raw_dir, voc_root, mat_dir, split):
  for labels_txt in dict.fromkeys([os.path.join(raw_dir, "labels.txt"),
                                   os.path.join(os.path.dirname(mat_dir), "labels.txt")]):
    if atomic_files.isfile(labels_txt):
      check_labels_txt(labels_txt)
  split_file = os.path.join(voc_root, "ImageSets", "Main", f"{split}.txt")
  return _examples(split_file, os.path.join(mat_dir, "{}.mat"),
                   os.path.join(voc_root, "JPEGImages", "{}.jpg"))


def _examples(split_file, label_template, image_template, labels_file=None):
  """Examples of the ids in `split_file`; templates: path with `{}` for the id."""
  core.require_file(split_file, "split list")
  examples = []
  for image_id in core.read_id_list(split_file):
    label_path = label_template.format(image_id)
    image_path = image_template.format(image_id)
    core.require_file(label_path, "label", for_path=f"image id {image_id} in {split_file}")
    core.require_file(image_path, "image", for_path=f"label {label_path}")
    examples.append(core.RawExample(image_id, image_path, label_path, labels_file))
  return examples


def _png59_examples(raw_dir, split):
  labels_file = next((path for path in (os.path.join(raw_dir, name) for name in LABELS_FILES)
                      if atomic_files.isfile(path)), None)
  if labels_file is None:
    raise core.ConversionError(
        f"{os.path.join(raw_dir, 'labels')}: no {' or '.join(LABELS_FILES)} in {raw_dir} gives "
        "the class of each label value; for the authors' preprocessed copy (alphabetical, 0 = "
        f"background) copy {AUTHORS_LABELS_FILE} there as labels.txt")
  png_lut(labels_file)  # refuse a wrong list before anything is written
  return _examples(os.path.join(raw_dir, f"{split}.txt"),
                   os.path.join(raw_dir, "labels", "{}.png"),
                   os.path.join(raw_dir, "images", "{}.jpg"), labels_file)


def list_examples(raw_dir, split):
  if atomic_files.gfile().isdir(os.path.join(raw_dir, "labels")):
    examples = _png59_examples(raw_dir, split)
  else:
    voc_root = _voc_root(raw_dir)
    mat_dir = _mat_dir(raw_dir, voc_root)
    mmseg_dir = os.path.join(voc_root, "SegmentationClassContext")
    if mat_dir is not None:
      examples = _official_examples(raw_dir, voc_root, mat_dir, split)
    elif atomic_files.gfile().isdir(mmseg_dir):
      examples = _examples(
          os.path.join(voc_root, "ImageSets", "SegmentationContext", f"{split}.txt"),
          os.path.join(mmseg_dir, "{}.png"), os.path.join(voc_root, "JPEGImages", "{}.jpg"))
    else:
      raise core.ConversionError(f"no PASCAL-Context trainval/ (the .mat label maps) in {raw_dir} "
                                 f"or {voc_root}, nor mmseg's SegmentationClassContext/")
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
    lut = png_lut(example.labels_file) if example.labels_file else _PNG_LUT
    label = core.map_label(core.load_label_png(example.label_path), lut, example.label_path)
  return core.encode_pair(example.key, example.image_path, label, example.label_path)
