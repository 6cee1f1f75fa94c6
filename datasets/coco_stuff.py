"""COCO-Stuff-164k, 171 classes (118287 train / 5000 val).

Raw layouts, each as its own instructions unpack it (commands in docs/datasets.md); the label maps
of split S are looked for in `annotations/S2017/` (the official cocostuff README and mmseg:
`images/{train2017,val2017}` + `annotations/{train2017,val2017}`), then in
`stuffthingmaps_trainval2017/S2017/`, then in `S2017/` itself (the stuffthingmaps zip unpacked in
place, beside the images); images in `images/S2017/`, else `S2017/`.

A stuffthingmaps pixel holds COCO id - 1 (0..181; 255 = unlabeled). COCO's 182 ids include 11
thing ids no annotation uses (COCO ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91, i.e. pixel values
11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90); the other 171 pixel values map to train ids 0..170 in
increasing order. The unused values map to ignore should they ever occur; any other value (182..254)
is an error. mmseg's converter writes `<id>_labelTrainIds.png` beside each map, already in these
train ids (0..170, 255): such files are used only for an id whose stuffthingmaps PNG is absent.
"""

import os

from datasets import core
from hfgd_tf import atomic_files
from hfgd_tf.config import IGNORE_LABEL

THING_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush")
STUFF_NAMES = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood")
CLASS_NAMES = THING_NAMES + STUFF_NAMES

# stuffthingmaps pixel values (COCO id - 1) of the 11 thing ids COCO defines but never annotates.
UNUSED_RAW_VALUES = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
NUM_RAW_VALUES = 182
KEPT_RAW_VALUES = tuple(v for v in range(NUM_RAW_VALUES) if v not in UNUSED_RAW_VALUES)

INFO = core.DatasetInfo(
    name="coco_stuff",
    num_classes=len(CLASS_NAMES),
    class_names=CLASS_NAMES,
    palette=core.voc_palette(len(CLASS_NAMES)),
    split_sizes={"train": 118287, "val": 5000},
    crop_size=(513, 513),
    # COCO images are at most 640 pixels on a side.
    eval_size=(641, 641),
)

_LUT = core.build_lut({
    IGNORE_LABEL: IGNORE_LABEL,
    **{raw: IGNORE_LABEL for raw in UNUSED_RAW_VALUES},
    **{raw: train_id for train_id, raw in enumerate(KEPT_RAW_VALUES)}})


# mmseg's 171-class maps are our train ids already.
_TRAIN_ID_LUT = core.build_lut({IGNORE_LABEL: IGNORE_LABEL,
                                **{train_id: train_id for train_id in range(len(CLASS_NAMES))}})
TRAIN_ID_SUFFIX = "_labelTrainIds.png"


def _label_dir(raw_dir, split):
  candidates = [os.path.join(raw_dir, "annotations", f"{split}2017"),
                os.path.join(raw_dir, "stuffthingmaps_trainval2017", f"{split}2017"),
                os.path.join(raw_dir, f"{split}2017")]
  for candidate in candidates:
    if atomic_files.gfile().isdir(candidate) and any(
        name.endswith(".png") for name in atomic_files.listdir(candidate)):
      return candidate
  raise core.ConversionError(f"missing label directory: none of {', '.join(candidates)} holds "
                             "stuffthingmaps PNGs")


def list_examples(raw_dir, split):
  label_dir = _label_dir(raw_dir, split)
  image_dir = os.path.join(raw_dir, "images", f"{split}2017")
  if not atomic_files.gfile().isdir(image_dir):
    image_dir = os.path.join(raw_dir, f"{split}2017")
  label_paths = {}
  for name in atomic_files.listdir(label_dir):
    if name.endswith(TRAIN_ID_SUFFIX):
      label_paths.setdefault(name[:-len(TRAIN_ID_SUFFIX)], os.path.join(label_dir, name))
    elif name.endswith(".png"):
      label_paths[name[:-len(".png")]] = os.path.join(label_dir, name)
  examples = []
  for key, label_path in sorted(label_paths.items()):
    image_path = os.path.join(image_dir, f"{key}.jpg")
    core.require_file(image_path, "image", for_path=f"label {label_path}")
    examples.append(core.RawExample(key, image_path, label_path))
  return examples


def load_example(example: core.RawExample) -> core.EncodedExample:
  lut = _TRAIN_ID_LUT if example.label_path.endswith(TRAIN_ID_SUFFIX) else _LUT
  label = core.map_label(core.load_label_png(example.label_path), lut, example.label_path)
  return core.encode_pair(example.key, example.image_path, label, example.label_path)
