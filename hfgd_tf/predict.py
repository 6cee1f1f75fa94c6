"""Segment image files of any size: class-map, colourised and overlay PNGs at the input resolution.

Images are normalised as in training/eval (x*2/255 - 1) and run through the inference protocol
(`inference.model_logits`). A batch of several images is padded bottom/right to its largest image
with 127.5 (0 after normalisation, the original's pad value) and each prediction cropped back; with
batch=1 every image runs at its exact size, as the exported SavedModel does. An unreadable file is
logged and skipped.

Outputs for `<dir>/<name>.<ext>`: `class_map/<name>.png` (uint8 class indices), `colour/<name>.png`
(palette colours) and `overlay/<name>.png` (colours blended over the image).
"""

import dataclasses
import io
import os
from typing import List, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from hfgd_tf import atomic_files, inference, visualize
from hfgd_tf.inference import SS_SCALES
from hfgd_tf.ops import IMAGE_PAD_VALUE, normalize_image

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
OUTPUT_KINDS = ("class_map", "colour", "overlay")


@dataclasses.dataclass
class PredictSummary:
  """What `predict_images` did: (input, output name) pairs and (input, reason) for skipped files."""
  output_dir: str
  processed: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
  skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)


def list_inputs(inputs: Union[str, Sequence[str]]) -> List[str]:
  """A folder (its image files by extension), a glob pattern, or a list of paths -> sorted paths."""
  if not isinstance(inputs, str):
    return list(inputs)
  if tf.io.gfile.isdir(inputs):
    paths = [os.path.join(inputs, name) for name in atomic_files.listdir(inputs)
             if name.lower().endswith(IMAGE_EXTENSIONS)]
  else:
    paths = [path for path in tf.io.gfile.glob(inputs) if not tf.io.gfile.isdir(path)]
  if not paths:
    raise ValueError(f"no images found for {inputs!r} (give a folder, a glob pattern or paths)")
  return sorted(paths)


def read_image(path):
  """Any PIL-readable file -> uint8 RGB [H, W, 3]; raises on an unreadable or truncated file."""
  with Image.open(io.BytesIO(atomic_files.read_bytes(path))) as image:
    image.load()
    return np.asarray(image.convert("RGB"))


def class_map_function(model, scales=SS_SCALES, flip=False, window=None):
  """A tf.function: normalised float32 [N, H, W, 3] of any size -> int32 class map [N, H, W]."""
  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
  def class_map(images):
    return inference.class_map(inference.model_logits(model, images, scales, flip, window))
  return class_map


def _output_names(paths):
  """File stems, numbered (`name_2`, ...) where two inputs share one."""
  names, seen = [], {}
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0]
    seen[stem] = seen.get(stem, 0) + 1
    names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
  return names


def _padded_batch(images):
  """uint8 images of any sizes -> normalised float32 [B, maxH, maxW, 3], padded bottom/right."""
  height = max(image.shape[0] for image in images)
  width = max(image.shape[1] for image in images)
  batch = np.full((len(images), height, width, 3), IMAGE_PAD_VALUE, np.float32)
  for i, image in enumerate(images):
    batch[i, :image.shape[0], :image.shape[1]] = image
  return normalize_image(batch)


def predict_images(model, inputs, output_dir, palette, scales=SS_SCALES, flip=False, window=None,
                   batch=1, ignore_label=visualize.IGNORE_LABEL, alpha=0.5) -> PredictSummary:
  """Writes class-map, colour and overlay PNGs for every readable image of `inputs`.

  inputs: a folder, a glob pattern or a list of paths; palette: K RGB triples. Returns a
  PredictSummary; unreadable files are logged (named, with the reason) and skipped.
  """
  paths = list_inputs(inputs)
  names = dict(zip(paths, _output_names(paths)))
  class_map_fn = class_map_function(model, scales, flip, window)
  summary = PredictSummary(output_dir=output_dir)
  for start in range(0, len(paths), batch):
    readable = []
    for path in paths[start:start + batch]:
      try:
        readable.append((path, read_image(path)))
      except Exception as e:  # pylint: disable=broad-except  (PIL raises many types)
        logging.warning("skipping %s: unreadable image (%s)", path, e)
        summary.skipped.append((path, f"unreadable image: {e}"))
    if not readable:
      continue
    class_maps = class_map_fn(_padded_batch([image for _, image in readable])).numpy()
    for (path, image), class_map in zip(readable, class_maps):
      class_map = class_map[:image.shape[0], :image.shape[1]].astype(np.uint8)
      colour = visualize.colorize(class_map, palette, ignore_label)
      outputs = {"class_map": class_map, "colour": colour,
                 "overlay": visualize.overlay(image, colour, alpha)}
      for kind in OUTPUT_KINDS:
        visualize.write_png(os.path.join(output_dir, kind, names[path] + ".png"), outputs[kind])
      summary.processed.append((path, names[path]))
    logging.info("predicted %d of %d images", len(summary.processed), len(paths))
  logging.info("wrote predictions of %d images to %s (%d skipped)", len(summary.processed),
               output_dir, len(summary.skipped))
  return summary
