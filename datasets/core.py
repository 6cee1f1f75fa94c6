"""What every dataset declares, and the helpers converters share to read raw files safely.

Raw files are read through tf.io.gfile (hfgd_tf/atomic_files.py), so a raw download in a bucket
converts like a local one; importing this module does not import TensorFlow.
"""

import dataclasses
import io
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from hfgd_tf import atomic_files
from hfgd_tf.config import IGNORE_LABEL


class ConversionError(ValueError):
  """A raw input file that cannot be converted; the message names the file."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static description of a dataset in the library's label convention.

  `split_sizes` are the official counts (a converted copy records its real counts in
  `dataset_info.json`). `crop_size` is the default training crop and `eval_size` the size every
  evaluation image is padded to (it must be at least as large as every image), both (height, width).
  `ids_ignore_label` is the ignore value in the authors' iDS TFRecords for this dataset (Pascal
  Context: 0, with classes 1..K), which the reader maps to the library convention.
  """
  name: str
  num_classes: int
  class_names: Tuple[str, ...]
  palette: Tuple[Tuple[int, int, int], ...]
  split_sizes: Dict[str, int]
  crop_size: Tuple[int, int]
  eval_size: Tuple[int, int]
  ignore_label: int = IGNORE_LABEL
  ids_ignore_label: int = IGNORE_LABEL

  def __post_init__(self):
    if len(self.class_names) != self.num_classes or len(self.palette) != self.num_classes:
      raise ValueError(f"{self.name}: {self.num_classes} classes but {len(self.class_names)} names "
                       f"and {len(self.palette)} colours")

  def to_json_dict(self):
    return {
        "name": self.name,
        "num_classes": self.num_classes,
        "class_names": list(self.class_names),
        "palette": [list(colour) for colour in self.palette],
        "ignore_label": self.ignore_label,
        "crop_size": list(self.crop_size),
        "eval_size": list(self.eval_size),
    }


@dataclasses.dataclass(frozen=True)
class RawExample:
  """One image/label pair on disk; `key` becomes `image/filename` (an id without extension).

  `labels_file`: for layouts whose label values are indices into a class list that ships with the
  copy, the file giving that list (read by the worker that maps the label).
  """
  key: str
  image_path: str
  label_path: str
  labels_file: Optional[str] = None


@dataclasses.dataclass
class EncodedExample:
  """An example ready to serialise: encoded image bytes and a label map in library convention."""
  key: str
  image_bytes: bytes
  image_format: str  # "jpeg" or "png"
  label: np.ndarray  # uint8 [H, W], values 0..K-1 or IGNORE_LABEL

  @property
  def height(self):
    return self.label.shape[0]

  @property
  def width(self):
    return self.label.shape[1]


def voc_palette(num_classes):
  """The PASCAL VOC colour map (bits of the class index spread over R, G, B), as RGB tuples."""
  palette = []
  for index in range(num_classes):
    r = g = b = 0
    value = index
    for shift in range(7, -1, -1):
      r |= ((value >> 0) & 1) << shift
      g |= ((value >> 1) & 1) << shift
      b |= ((value >> 2) & 1) << shift
      value >>= 3
    palette.append((r, g, b))
  return tuple(palette)


def read_file(path):
  try:
    return atomic_files.read_bytes(path)
  except OSError as e:
    raise ConversionError(str(e)) from e


def load_image(path) -> Tuple[bytes, str, Tuple[int, int]]:
  """Reads an image file fully (so a truncated file fails here, not in training).

  Returns (bytes, format, (height, width)). JPEG and PNG sources keep their original bytes (lossless
  with respect to the source) when they are 8-bit RGB or grey; anything else (CMYK JPEG, RGBA or
  16-bit PNG, other formats) is re-encoded as an RGB PNG so the reader only ever meets those two.
  """
  data = read_file(path)
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except Exception as e:  # PIL raises many types for corrupt files.
    raise ConversionError(f"unreadable image file {path}: {e}") from e
  size = (image.height, image.width)
  if image.format in ("JPEG", "PNG") and image.mode in ("RGB", "L"):
    return data, image.format.lower(), size
  return encode_png(np.asarray(image.convert("RGB"))), "png", size


def load_label_png(path) -> np.ndarray:
  """Reads a single-channel label PNG as its raw values (palette PNGs give their indices)."""
  data = read_file(path)
  try:
    label = Image.open(io.BytesIO(data))
    label.load()
  except Exception as e:
    raise ConversionError(f"unreadable label file {path}: {e}") from e
  if label.mode not in ("L", "P", "I", "I;16"):
    raise ConversionError(f"label file {path} has mode {label.mode}; expected one channel")
  return np.asarray(label)


def encode_png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def build_lut(mapping: Dict[int, int], size=256):
  """A lookup table raw value -> library label; -1 marks raw values that must not occur."""
  lut = np.full(size, -1, np.int32)
  for raw, label in mapping.items():
    lut[raw] = label
  return lut


def map_label(raw, lut, path):
  """Applies `lut` to a raw label map; any value it does not know is an error naming `path`."""
  raw = np.asarray(raw)
  if raw.size and (raw.min() < 0 or raw.max() >= len(lut)):
    bad = np.unique(raw[(raw < 0) | (raw >= len(lut))])
    raise ConversionError(f"label file {path} has values {bad[:10].tolist()} that are neither a "
                          "known class nor ignore")
  mapped = lut[raw]
  if np.any(mapped < 0):
    bad = np.unique(raw[mapped < 0])
    raise ConversionError(f"label file {path} has values {bad[:10].tolist()} that are neither a "
                          "known class nor ignore")
  return mapped.astype(np.uint8)


def encode_pair(key, image_path, label, label_path) -> EncodedExample:
  """Loads the image and checks it against an already mapped label of the same example."""
  image_bytes, image_format, size = load_image(image_path)
  if size != label.shape:
    raise ConversionError(f"size mismatch: image {image_path} is {size[0]}x{size[1]} but label "
                          f"{label_path} is {label.shape[0]}x{label.shape[1]} (HxW)")
  return EncodedExample(key, image_bytes, image_format, label)


def read_id_list(path) -> List[str]:
  """Whitespace-separated ids, as in the split files of VOC and of the authors' iDS layouts."""
  return read_file(path).decode("utf-8").split()


def require_file(path, what, for_path: Optional[str] = None):
  """Raises a ConversionError naming `path` (and what needed it) when the file is missing."""
  if not atomic_files.isfile(path):
    suffix = f" for {for_path}" if for_path else ""
    raise ConversionError(f"missing {what} {path}{suffix}")


def check_unique_keys(examples: Sequence[RawExample]):
  seen = {}
  for example in examples:
    if example.key in seen:
      raise ConversionError(f"two examples share the id {example.key}: {seen[example.key]} and "
                            f"{example.image_path}")
    seen[example.key] = example.image_path
