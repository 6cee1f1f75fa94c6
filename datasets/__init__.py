"""Dataset registry: one module per dataset, each exposing `INFO` (a `core.DatasetInfo`) and
`load_example(item) -> core.EncodedExample` (what the shard writer calls in worker processes); the
real datasets also `list_examples(raw_dir, split) -> [core.RawExample]`, the built-in one
`work_items(seed, split, count)`. Names `tfds:<name>[/<config>]` are TensorFlow Datasets, read
through an adapter (`datasets/tfds_adapters.py`) instead of converted.

Importing this package does not import TensorFlow (converter workers stay light).
"""

from datasets import ade20k, builtin, cityscapes, coco_stuff, pascal_context, tfds_adapters
from datasets.core import DatasetInfo
from hfgd_tf.registry import Registry

_DATASETS = Registry("dataset")
for _module in (ade20k, builtin, cityscapes, coco_stuff, pascal_context):
  _DATASETS.register(_module.INFO.name)(_module)


def dataset_names():
  return _DATASETS.names()


def get_dataset_module(name):
  return _DATASETS.get(name)


def get_dataset_info(name) -> DatasetInfo:
  """Converted datasets by registry name, TFDS ones by `tfds:<name>[/<config>]`; a ValueError
  naming the choices for anything else."""
  if tfds_adapters.is_tfds_name(name):
    return tfds_adapters.get_adapter(name).info
  return _DATASETS.get(name).INFO
