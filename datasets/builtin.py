"""A procedurally generated segmentation dataset, so a fresh machine can train with no download.

Every 128x128 image has a finely textured background and 6-9 objects whose class is their *shape*
(disc, square, triangle, ring, thin line or cross, cluster of small dots); each instance and each
background gets random colours, so colour alone cannot separate the classes. Objects never overlap
(a cut disc would no longer be a disc) and stand out from the background's colour. Rings, lines and
dots (2-4 px wide) are the thin structures and small objects the paper says high-resolution decoding
helps with. docs/demo.md explains the design.

Generation is a pure function of (seed, split, index), so the same seed gives byte-identical shards
whatever the number of worker processes. The dataset goes through the same TFRecord writer and
reader as the real datasets.
"""

import math
import os

import numpy as np

from datasets import core, records
from hfgd_tf import atomic_files

IMAGE_SIZE = 128
CLASS_NAMES = ("background", "disc", "square", "triangle", "ring", "line", "dot")
# The thin structures and small objects (2-4 px wide): the classes high-resolution decoding is for.
THIN_CLASSES = ("ring", "line", "dot")
# Split ids keep train and val streams of random numbers apart for the same seed.
_SPLIT_IDS = {"train": 0, "val": 1}
GENERATOR_FILENAME = "builtin_generator.json"
# Bumped whenever `generate` changes, so a copy made by an older generator is never reused.
GENERATOR_VERSION = 3

INFO = core.DatasetInfo(
    name="builtin",
    num_classes=len(CLASS_NAMES),
    class_names=CLASS_NAMES,
    palette=((96, 96, 96), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
             (245, 130, 48), (240, 50, 230)),
    split_sizes={"train": 1000, "val": 200},
    # 4*32+1, like 513 = 16*32+1: align-corners resizes between stride grids stay exact.
    crop_size=(129, 129),
    eval_size=(129, 129),
)

# Pixel-centre coordinates shared by every shape rasteriser, each [S, S].
_Y, _X = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5
# Objects keep this many pixels between each other, so no shape is cut by another.
_GAP = 2
# How often each object class (disc, square, triangle, ring, line, dot) is drawn: the thin and
# small classes more often, as they cover few pixels per instance.
_CLASS_WEIGHTS = np.array([1, 1, 1, 1.5, 2, 2]) / 8.5
# Texture amplitude of the background (per channel, around its base colour) and the least RGB
# distance of an object's colour from that base: edges inside the background stay weaker than an
# object's outline.
_TEXTURE_AMPLITUDE = 25
_MIN_CONTRAST = 100
# Placement attempts per object before it is dropped (crowded images get fewer objects).
_PLACEMENT_TRIES = 20


def _centre(rng, margin):
  return rng.uniform(margin, IMAGE_SIZE - margin, 2)


def _disc(rng):
  cy, cx = _centre(rng, 18)
  radius = rng.uniform(13, 24)
  return (_Y - cy) ** 2 + (_X - cx) ** 2 <= radius ** 2


def _square(rng):
  cy, cx = _centre(rng, 18)
  half = rng.uniform(11, 19)
  angle = rng.uniform(0, math.pi / 2)
  u = (_X - cx) * math.cos(angle) + (_Y - cy) * math.sin(angle)
  v = -(_X - cx) * math.sin(angle) + (_Y - cy) * math.cos(angle)
  return (np.abs(u) <= half) & (np.abs(v) <= half)


def _triangle(rng):
  cy, cx = _centre(rng, 20)
  radius = rng.uniform(16, 26)
  angles = (rng.uniform(0, 2 * math.pi) + np.array([0, 2, 4]) * math.pi / 3
            + rng.uniform(-0.25, 0.25, 3))
  ys, xs = cy + radius * np.sin(angles), cx + radius * np.cos(angles)
  # Inside a triangle: the three edge cross products share a sign.
  sides = [(xs[(i + 1) % 3] - xs[i]) * (_Y - ys[i]) - (ys[(i + 1) % 3] - ys[i]) * (_X - xs[i])
           for i in range(3)]
  return ((sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0)) | (
      (sides[0] <= 0) & (sides[1] <= 0) & (sides[2] <= 0))


def _ring(rng):
  cy, cx = _centre(rng, 18)
  outer = rng.uniform(14, 25)
  thickness = rng.uniform(2.5, 4)
  distance = np.sqrt((_Y - cy) ** 2 + (_X - cx) ** 2)
  return (distance <= outer) & (distance >= outer - thickness)


def _segment(cy, cx, angle, length, width):
  """Pixels within width/2 of a segment centred at (cy, cx)."""
  dy, dx = math.sin(angle), math.cos(angle)
  along = (_X - cx) * dx + (_Y - cy) * dy
  across = -(_X - cx) * dy + (_Y - cy) * dx
  return (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)


def _line(rng):
  """A thin line, or with probability 1/2 a cross of two perpendicular thin lines."""
  cy, cx = _centre(rng, 28)
  angle = rng.uniform(0, math.pi)
  width = rng.uniform(2.0, 3.0)
  mask = _segment(cy, cx, angle, rng.uniform(50, 80), width)
  if rng.uniform() < 0.5:
    mask |= _segment(cy, cx, angle + math.pi / 2, rng.uniform(30, 50), width)
  return mask


def _dots(rng):
  """A cluster of 3-6 small dots (radius 2.5-3.5 px)."""
  cy, cx = _centre(rng, 16)
  mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
  for _ in range(rng.integers(3, 7)):
    oy, ox = rng.uniform(-12, 12, 2)
    mask |= (_Y - cy - oy) ** 2 + (_X - cx - ox) ** 2 <= rng.uniform(2.5, 3.5) ** 2
  return mask


# Class id -> rasteriser.
_SHAPES = {1: _disc, 2: _square, 3: _triangle, 4: _ring, 5: _line, 6: _dots}


def _background(rng):
  """A random base colour under a fine texture (stripes, checkerboard, blobs or grain) of low
  amplitude; returns ([S, S, 3] float, the base colour [3])."""
  base = rng.uniform(40, 215, 3)
  other = np.clip(base + rng.uniform(-_TEXTURE_AMPLITUDE, _TEXTURE_AMPLITUDE, 3), 0, 255)
  kind = rng.integers(4)
  if kind == 0:
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(4, 10)
    weight = 0.5 + 0.5 * np.sin(2 * math.pi * ((_X * math.cos(angle) + _Y * math.sin(angle))
                                               / period))
  elif kind == 1:
    cell = rng.integers(3, 7)
    weight = ((_X // cell + _Y // cell) % 2).astype(np.float32)
  elif kind == 2:
    frequencies = rng.uniform(0.05, 0.2, 2)
    phases = rng.uniform(0, 2 * math.pi, 2)
    weight = 0.5 + 0.5 * np.sin(_X * frequencies[0] + phases[0]) * np.sin(
        _Y * frequencies[1] + phases[1])
  else:
    weight = rng.uniform(0, 1, (IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
  return base + weight[..., None] * (other - base), base


def _object_colour(rng, background):
  """A random colour at least _MIN_CONTRAST (RGB distance) away from the background's base
  colour."""
  while True:
    colour = rng.uniform(0, 255, 3)
    if np.linalg.norm(colour - background) >= _MIN_CONTRAST:
      return colour


def _dilate(mask, pixels):
  """Binary dilation by a (2*pixels+1)^2 square: rows, then columns (no SciPy)."""
  for axis in (0, 1):
    padded = np.pad(mask, [(pixels, pixels) if a == axis else (0, 0) for a in (0, 1)])
    mask = np.logical_or.reduce([np.take(padded, range(shift, shift + IMAGE_SIZE), axis=axis)
                                 for shift in range(2 * pixels + 1)])
  return mask


def generate(seed, split, index, num_objects=None):
  """Returns (image uint8 [S, S, 3], label uint8 [S, S]) for one example, S = IMAGE_SIZE.

  6-9 objects (or `num_objects`) of random classes (thin and small ones more often), each placed
  where it keeps a gap to the others; one that finds no room is dropped."""
  rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
  image, base = _background(rng)
  label = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
  taken = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
  count = rng.integers(6, 10) if num_objects is None else num_objects
  for class_id in rng.choice(np.arange(1, len(CLASS_NAMES)), count, p=_CLASS_WEIGHTS):
    for _ in range(_PLACEMENT_TRIES):
      mask = _SHAPES[int(class_id)](rng)
      if mask.any() and not (mask & taken).any():
        break
    else:
      continue
    taken |= _dilate(mask, _GAP)
    image[mask] = _object_colour(rng, base)
    label[mask] = class_id
  image += rng.normal(0, 6, image.shape)
  return np.clip(np.round(image), 0, 255).astype(np.uint8), label


def _check_same_generator(output_dir, existing, wanted):
  if existing != wanted:
    raise ValueError(f"{output_dir} already holds a built-in dataset generated with {existing}, "
                     f"not {wanted}; delete it (it is generated again in seconds) or choose "
                     "another directory")


def work_items(seed, split, count):
  """Work items for the shard writer: one (seed, split, index) tuple per example."""
  return [(seed, split, index) for index in range(count)]


def load_example(item) -> core.EncodedExample:
  seed, split, index = item
  image, label = generate(seed, split, index)
  return core.EncodedExample(f"{split}_{index:05d}", core.encode_png(image), "png", label)


def ensure_builtin_dataset(output_dir, seed=0, num_train=1000, num_val=200, num_workers=1,
                           show_progress=False):
  """Generates and converts the built-in dataset into `output_dir` unless it is already there.

  Idempotent: a finished copy (its `dataset_info.json` records the generator settings) is returned
  as is; an interrupted one resumes from its finished shards. A directory holding a copy made with
  other settings is an error rather than silently reused. Returns `output_dir`.
  """
  from datasets import tfrecord  # pylint: disable=import-outside-toplevel  (imports TensorFlow)
  generator = {"version": GENERATOR_VERSION, "seed": seed, "num_train": num_train,
               "num_val": num_val}
  info_path = records.info_path(output_dir)
  if atomic_files.gfile().exists(info_path):
    _check_same_generator(output_dir, atomic_files.read_json(info_path).get("generator"),
                          generator)
    return output_dir
  # Written before any shard, so resuming never mixes shards of two settings.
  marker_path = os.path.join(output_dir, GENERATOR_FILENAME)
  if atomic_files.gfile().exists(marker_path):
    _check_same_generator(output_dir, atomic_files.read_json(marker_path), generator)
  else:
    atomic_files.write_json(marker_path, generator)
  tfrecord.write_dataset(
      INFO, load_example, {"train": work_items(seed, "train", num_train),
                           "val": work_items(seed, "val", num_val)},
      output_dir, num_workers=num_workers, show_progress=show_progress,
      extra_info={"generator": generator})
  return output_dir
