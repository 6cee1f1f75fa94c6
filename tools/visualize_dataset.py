r"""A picture of dataset samples next to their colourised labels, to check a dataset by eye.

  python -m tools.visualize_dataset --output=docs/builtin_samples.png   # built-in, seed 0
  python -m tools.visualize_dataset --dataset_dir=/data/tfrecords/cityscapes --split=val \
      --output=/tmp/cityscapes.png                                         # any converted copy

Ignored pixels (255) are drawn black; a legend lists the classes and their colours. --output is
required, so a bare run never overwrites the picture the README shows.
"""

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

from datasets import builtin, records
from hfgd_tf.atomic_files import read_json
from hfgd_tf.visualize import colorize, write_png

_OUTPUT = flags.DEFINE_string("output", None, "PNG file to write (required).", required=True)
_DATASET_DIR = flags.DEFINE_string(
    "dataset_dir", None, "A converted dataset (shards + dataset_info.json); default: built-in.")
_SPLIT = flags.DEFINE_string("split", "train", "Split to sample.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 6, "Samples in the grid.")
_SEED = flags.DEFINE_integer("seed", 0, "Built-in dataset seed.")
_TILE = flags.DEFINE_integer("tile", 192, "Longest side of each tile, in pixels.")

_GAP = 6
_LEGEND_ROW = 16


def sample_grid(samples, palette, class_names, columns=3, tile=256):
  """Grid of (image | colourised label) pairs, `columns` pairs per row, with a class legend."""
  rows = -(-len(samples) // columns)
  legend_rows = -(-len(class_names) // 4)
  width = columns * (2 * tile + _GAP) + (columns + 1) * _GAP
  height = rows * (tile + _GAP) + _GAP + legend_rows * _LEGEND_ROW + _GAP
  canvas = Image.new("RGB", (width, height), (255, 255, 255))
  for index, (image, label) in enumerate(samples):
    scale = tile / max(label.shape)
    size = (round(label.shape[1] * scale), round(label.shape[0] * scale))
    x = _GAP + (index % columns) * (2 * tile + 2 * _GAP)
    y = _GAP + (index // columns) * (tile + _GAP)
    canvas.paste(Image.fromarray(image).resize(size, Image.BILINEAR), (x, y))
    canvas.paste(Image.fromarray(colorize(label, palette)).resize(size, Image.NEAREST),
                 (x + tile + _GAP, y))
  draw = ImageDraw.Draw(canvas)
  legend_top = rows * (tile + _GAP) + _GAP
  column_width = width // 4
  for index, (name, colour) in enumerate(zip(class_names, palette)):
    x = _GAP + (index % 4) * column_width
    y = legend_top + (index // 4) * _LEGEND_ROW
    draw.rectangle([x, y + 2, x + 12, y + 12], fill=tuple(colour), outline=(0, 0, 0))
    draw.text((x + 18, y + 1), f"{index}: {name}", fill=(0, 0, 0))
  return canvas


def _converted_samples(dataset_dir, split, count):
  """(image, label) arrays of the first `count` records and the dataset's palette and names."""
  from hfgd_tf.data import pipeline  # pylint: disable=import-outside-toplevel  (imports TF)
  info = read_json(records.info_path(dataset_dir))
  samples = [(example["image"].numpy().astype(np.uint8), example["label"].numpy().astype(np.uint8))
             for example in pipeline.examples(records.split_files(dataset_dir, split)).take(
                 count)]
  return samples, info["palette"], info["class_names"]


def main(argv):
  del argv
  if _DATASET_DIR.value:
    samples, palette, names = _converted_samples(_DATASET_DIR.value, _SPLIT.value,
                                                 _NUM_SAMPLES.value)
  else:
    samples = [builtin.generate(_SEED.value, _SPLIT.value, index)
               for index in range(_NUM_SAMPLES.value)]
    palette, names = builtin.INFO.palette, builtin.INFO.class_names
  write_png(_OUTPUT.value, np.asarray(sample_grid(samples, palette, names, tile=_TILE.value)))


if __name__ == "__main__":
  app.run(main)
