"""TensorFlow Datasets as a data source: `--dataset=tfds:<name>[/<config>]`, one adapter each.

An adapter says which features of a prepared TFDS dataset hold the image, the label map and the
example id, maps raw label values to classes 0..K-1 / ignore with a lookup table (values it does not
know stop the input pipeline, naming the example), and carries a DatasetInfo (class names, palette,
crop and eval sizes) as the converted datasets do. Nothing here imports TensorFlow or
tensorflow-datasets; reading is in `hfgd_tf/data/tfds_source.py`.

* `tfds:cityscapes/semantic_segmentation`: `segmentation_label` is the raw gtFine labelIds image,
  mapped with `datasets/cityscapes.py`'s labelIds -> trainIds table (19 classes). Splits train,
  validation (`val` is accepted for it) and test (labels withheld). TFDS needs the two zips from the
  registration-gated site in --manual_dir to prepare it.
* `tfds:oxford_iiit_pet`: `segmentation_mask` is the trimap 1 = pet, 2 = background, 3 = border.
  Two classes, background (0) and pet (1); the border, a band the annotators left unclassified
  around every outline, is ignored (255), so it neither trains nor counts in the mIoU. Splits
  train (3680, the official trainval) and test (3669). Images vary in size: one whose longer side
  exceeds 513 is downscaled to 513 (image bilinear, label nearest) for training and evaluation
  alike, so every evaluation image fits the 513x513 pad.

TFDS's `scene_parse150` carries the 2017 instance annotations, not the 150-class semantic masks of
ADE20K: use the ADE20K converter (`datasets/ade20k.py`) for ADE20K.
"""

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np

from datasets import cityscapes, core
from hfgd_tf.config import IGNORE_LABEL

PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class TfdsAdapter:
  """How one TFDS dataset (`tfds_name`: "name" or "name/config") becomes library examples.

  `label_lut[raw]` is the library label of a raw label pixel, -1 for values that must not occur.
  `split_aliases` maps our split names to the dataset's (e.g. val -> validation). `max_size`
  bounds the longer image side (larger examples are downscaled). `prepare_flags` are the extra
  flags preparing it needs (e.g. a manual download folder).
  """
  tfds_name: str
  info: core.DatasetInfo
  image_feature: str
  label_feature: str
  id_feature: str
  label_lut: Tuple[int, ...]
  split_aliases: Dict[str, str] = dataclasses.field(default_factory=dict)
  max_size: Optional[int] = None
  prepare_flags: str = ""

  @property
  def name(self):
    return PREFIX + self.tfds_name


def _lut(array: np.ndarray) -> Tuple[int, ...]:
  return tuple(int(value) for value in array)


_PET_TRIMAP = {1: 1, 2: 0, 3: IGNORE_LABEL}  # pet, background, border

ADAPTERS = {adapter.name: adapter for adapter in (
    TfdsAdapter(
        tfds_name="cityscapes/semantic_segmentation",
        info=dataclasses.replace(cityscapes.INFO, name="tfds:cityscapes/semantic_segmentation",
                                 split_sizes={"train": 2975, "validation": 500}),
        image_feature="image_left", label_feature="segmentation_label", id_feature="image_id",
        label_lut=_lut(cityscapes.LABEL_ID_LUT), split_aliases={"val": "validation"},
        prepare_flags="--manual_dir=<folder with leftImg8bit_trainvaltest.zip and "
                      "gtFine_trainvaltest.zip>"),
    TfdsAdapter(
        tfds_name="oxford_iiit_pet",
        info=core.DatasetInfo(
            name="tfds:oxford_iiit_pet", num_classes=2, class_names=("background", "pet"),
            palette=core.voc_palette(2), split_sizes={"train": 3680, "test": 3669},
            crop_size=(513, 513), eval_size=(513, 513)),
        image_feature="image", label_feature="segmentation_mask", id_feature="file_name",
        label_lut=_lut(core.build_lut(_PET_TRIMAP)), max_size=513),
)}


def is_tfds_name(name) -> bool:
  return name.startswith(PREFIX)


def get_adapter(name) -> TfdsAdapter:
  """The adapter of `tfds:<name>[/<config>]`; a ValueError listing the adapters otherwise."""
  if name not in ADAPTERS:
    raise ValueError(f"no TFDS adapter for {name!r}; adapters exist for "
                     f"{', '.join(sorted(ADAPTERS))} (datasets/tfds_adapters.py)")
  return ADAPTERS[name]


def prepare_command(adapter: TfdsAdapter, data_dir: Optional[str]) -> str:
  """The command that prepares `adapter`'s dataset in `data_dir` (None: TFDS's default folder)."""
  parts = ["python3 -m datasets.tfds_build", f"--dataset={adapter.name}"]
  if data_dir:
    parts.append(f"--data_dir={data_dir}")
  if adapter.prepare_flags:
    parts.append(adapter.prepare_flags)
  return " ".join(parts)
