"""Class maps to pictures: palette colouring, blending over the image, and atomic PNG writing."""

import io

import numpy as np
from PIL import Image

from hfgd_tf.atomic_files import write_bytes
from hfgd_tf.config import IGNORE_LABEL


def colorize(class_map, palette, ignore_label=IGNORE_LABEL):
  """Class indices [H, W] -> uint8 RGB [H, W, 3] by `palette` (K RGB triples).

  `ignore_label`, and any value with no palette entry, is black.
  """
  class_map = np.asarray(class_map)
  palette = np.asarray(palette, np.uint8).reshape(-1, 3)
  lookup = np.zeros((max(256, len(palette), int(class_map.max(initial=0)) + 1), 3), np.uint8)
  lookup[:len(palette)] = palette
  if 0 <= ignore_label < len(lookup):
    lookup[ignore_label] = 0
  return lookup[class_map.astype(np.int64)]


def overlay(image_uint8, colour_mask, alpha=0.5):
  """(1 - alpha) * image + alpha * mask, both uint8 RGB [H, W, 3], rounded to uint8."""
  image = np.asarray(image_uint8, np.float32)
  mask = np.asarray(colour_mask, np.float32)
  if image.shape != mask.shape:
    raise ValueError(f"image {image.shape} and mask {mask.shape} differ in shape")
  return np.clip(np.round((1.0 - alpha) * image + alpha * mask), 0, 255).astype(np.uint8)


def write_png(path, array):
  """Writes uint8 [H, W] (grey/indices) or [H, W, 3] (RGB) as PNG at `path` on any filesystem,
  encoded in memory and written atomically, so a reader never sees a half-written file."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(array, np.uint8)).save(buffer, format="PNG")
  write_bytes(path, buffer.getvalue())


def comparison_grid(images, labels, predictions, palette, gap=4):
  """One row per example: image | colourised ground truth | colourised prediction, white gaps.

  images uint8 [N, H, W, 3]; labels and predictions [N, H, W] class maps (ignore -> black).
  Returns uint8 [N*H + (N-1)*gap, 3*W + 2*gap, 3].
  """
  images = np.asarray(images, np.uint8)
  count, height, width = images.shape[:3]
  grid = np.full((count * height + (count - 1) * gap, 3 * width + 2 * gap, 3), 255, np.uint8)
  for row in range(count):
    tiles = (images[row], colorize(labels[row], palette), colorize(predictions[row], palette))
    top = row * (height + gap)
    for column, tile in enumerate(tiles):
      left = column * (width + gap)
      grid[top:top + height, left:left + width] = tile
  return grid
