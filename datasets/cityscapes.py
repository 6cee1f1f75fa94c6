"""Cityscapes (fine annotations), 19 classes (2975 train / 500 val).

Raw layout, as `unzip leftImg8bit_trainvaltest.zip` and `unzip gtFine_trainvaltest.zip` leave it:
`leftImg8bit/{split}/<city>/<stem>_leftImg8bit.png` and
`gtFine/{split}/<city>/<stem>_gtFine_labelIds.png`. labelIds map to the 19 trainIds of the official
labels table (cityscapesScripts `labels.py`); every other id (0..6, 9, 10, 14..16, 18, 29, 30)
becomes ignore. The license plate (id -1) never occurs: the official json2labelImg script does not
draw objects with a negative id, so their pixels keep the label beneath (usually car). 255, which
the official maps do not contain, is read as ignore; 34..254 are errors. A tree prepared by
cityscapesScripts' createTrainIdLabelImgs or mmseg also holds `<stem>_gtFine_labelTrainIds.png`
(0..18, 255), used only for a stem whose labelIds map is absent.
"""

import os

from datasets import core
from hfgd_tf import atomic_files
from hfgd_tf.config import IGNORE_LABEL

# (name, labelId, colour) of the 19 evaluated classes, in trainId order.
CLASSES = (
    ("road", 7, (128, 64, 128)), ("sidewalk", 8, (244, 35, 232)), ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)), ("fence", 13, (190, 153, 153)), ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)), ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)), ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)), ("person", 24, (220, 20, 60)), ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)), ("truck", 27, (0, 0, 70)), ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)), ("motorcycle", 32, (0, 0, 230)), ("bicycle", 33, (119, 11, 32)))
NUM_LABEL_IDS = 34  # labelIds 0..33
UNLABELED_VALUE = 255  # not in official labelIds maps; read as ignore

INFO = core.DatasetInfo(
    name="cityscapes",
    num_classes=len(CLASSES),
    class_names=tuple(name for name, _, _ in CLASSES),
    palette=tuple(colour for _, _, colour in CLASSES),
    split_sizes={"train": 2975, "val": 500},
    crop_size=(513, 1025),
    eval_size=(1025, 2049),
)

# labelId pixel -> trainId or ignore (-1: a value that must not occur); the TFDS adapter reuses it.
LABEL_ID_LUT = core.build_lut({
    UNLABELED_VALUE: IGNORE_LABEL,
    **{label_id: IGNORE_LABEL for label_id in range(NUM_LABEL_IDS)},
    **{label_id: train_id for train_id, (_, label_id, _) in enumerate(CLASSES)}})

_TRAIN_ID_LUT = core.build_lut({IGNORE_LABEL: IGNORE_LABEL,
                                **{train_id: train_id for train_id in range(len(CLASSES))}})

_LABEL_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
_IMAGE_SUFFIX = "_leftImg8bit.png"


def list_examples(raw_dir, split):
  label_root = os.path.join(raw_dir, "gtFine", split)
  if not atomic_files.gfile().isdir(label_root):
    raise core.ConversionError(f"missing label directory {label_root}")
  examples = []
  for city in atomic_files.listdir(label_root):
    city_dir = os.path.join(label_root, city)
    if not atomic_files.gfile().isdir(city_dir):
      continue
    label_paths = {}
    for name in atomic_files.listdir(city_dir):
      if name.endswith(TRAIN_ID_SUFFIX):
        label_paths.setdefault(name[:-len(TRAIN_ID_SUFFIX)], os.path.join(city_dir, name))
      elif name.endswith(_LABEL_SUFFIX):
        label_paths[name[:-len(_LABEL_SUFFIX)]] = os.path.join(city_dir, name)
    for stem, label_path in sorted(label_paths.items()):
      image_path = os.path.join(raw_dir, "leftImg8bit", split, city, stem + _IMAGE_SUFFIX)
      core.require_file(image_path, "image", for_path=f"label {label_path}")
      examples.append(core.RawExample(stem, image_path, label_path))
  return examples


def load_example(example: core.RawExample) -> core.EncodedExample:
  lut = _TRAIN_ID_LUT if example.label_path.endswith(TRAIN_ID_SUFFIX) else LABEL_ID_LUT
  label = core.map_label(core.load_label_png(example.label_path), lut, example.label_path)
  return core.encode_pair(example.key, example.image_path, label, example.label_path)
