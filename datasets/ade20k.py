"""ADE20K scene parsing (ADEChallengeData2016), 150 classes (20210 train / 2000 val).

Raw layout (the challenge release, as every segmentation framework reads it): `images/{training,
validation}/<id>.jpg` and `annotations/{training,validation}/<id>.png`, directly in raw_dir or
under `ADEChallengeData2016/`. Our split names train/val select training/validation. A label pixel
holds 0 ("other", not evaluated) -> ignore, or 1..150 -> classes 0..149; 151..254 are errors.
Class names and colours are the ones every ADE20K-150 codebase uses (names as in mmsegmentation).
"""

import os

from datasets import core
from hfgd_tf import atomic_files
from hfgd_tf.config import IGNORE_LABEL

CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag")
PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255))

INFO = core.DatasetInfo(
    name="ade20k",
    num_classes=len(CLASS_NAMES),
    class_names=CLASS_NAMES,
    palette=PALETTE,
    split_sizes={"train": 20210, "val": 2000},
    crop_size=(512, 512),
    # Evaluation is at the native resolution, padded; most images are at most 512 on the short
    # side, a few are larger: the eval pipeline names any image beyond this pad.
    eval_size=(2049, 2049),
)

# 0 ("other") -> ignore, 1..150 -> 0..149.
_LUT = core.build_lut(
    {0: IGNORE_LABEL, **{raw: raw - 1 for raw in range(1, len(CLASS_NAMES) + 1)}})
_SPLIT_FOLDERS = {"train": "training", "val": "validation"}


def _root(raw_dir):
  nested = os.path.join(raw_dir, "ADEChallengeData2016")
  return nested if atomic_files.gfile().isdir(os.path.join(nested, "annotations")) else raw_dir


def list_examples(raw_dir, split):
  if split not in _SPLIT_FOLDERS:
    raise core.ConversionError(f"ade20k has splits {sorted(_SPLIT_FOLDERS)}, not {split!r}")
  root = _root(raw_dir)
  label_dir = os.path.join(root, "annotations", _SPLIT_FOLDERS[split])
  if not atomic_files.gfile().isdir(label_dir):
    raise core.ConversionError(f"missing label directory {label_dir}")
  examples = []
  for name in atomic_files.listdir(label_dir):
    if not name.endswith(".png"):
      continue
    key = name[:-len(".png")]
    label_path = os.path.join(label_dir, name)
    image_path = os.path.join(root, "images", _SPLIT_FOLDERS[split], f"{key}.jpg")
    core.require_file(image_path, "image", for_path=f"label {label_path}")
    examples.append(core.RawExample(key, image_path, label_path))
  return examples


def load_example(example: core.RawExample) -> core.EncodedExample:
  label = core.map_label(core.load_label_png(example.label_path), _LUT, example.label_path)
  return core.encode_pair(example.key, example.image_path, label, example.label_path)
