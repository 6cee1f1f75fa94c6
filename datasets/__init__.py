"""Dataset registry: one module per dataset, each exposing `INFO` (a `core.DatasetInfo`) and
`load_example(item) -> core.EncodedExample` (what the shard writer calls in worker processes); the
real datasets also `list_examples(raw_dir, split) -> [core.RawExample]`, the built-in one
`work_items(seed, split, count)`.

Importing this package does not import TensorFlow (converter workers stay light).
"""

from datasets import ade20k, builtin, cityscapes, coco_stuff, pascal_context
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
  return _DATASETS.get(name).INFO
