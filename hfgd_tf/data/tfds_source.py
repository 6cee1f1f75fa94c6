"""Reads a prepared TensorFlow Datasets split as a `sources.ExampleSource`.

Images and label maps are read still encoded (TFDS's SkipDecoding, only the adapter's features),
so shuffling moves bytes, and are decoded, mapped and checked like our own records
(`decode.decode_mapped_example`). Nothing is downloaded here: a dataset that is not prepared is an
error naming the command that prepares it. Importing this module imports tensorflow-datasets (not
TensorFlow); only `example_source` needs TensorFlow.
"""

from typing import Optional

import tensorflow_datasets as tfds

from datasets import tfds_adapters


class DatasetNotPreparedError(ValueError):
  """The TFDS dataset is not in the data folder; the message names the command preparing it."""


def load_builder(adapter: tfds_adapters.TfdsAdapter, data_dir: Optional[str]):
  """The TFDS builder of `adapter`'s dataset in `data_dir` (None: TFDS's default folder)."""
  builder = tfds.builder(adapter.tfds_name, data_dir=data_dir)
  if not builder.is_prepared():
    raise DatasetNotPreparedError(
        f"{adapter.name} (version {builder.version}) is not prepared: no dataset_info.json in "
        f"{builder.data_dir}; prepare it with: {tfds_adapters.prepare_command(adapter, data_dir)}")
  return builder


def resolve_split(adapter: tfds_adapters.TfdsAdapter, builder, split) -> str:
  """The dataset's name for our `split` (aliases applied; TFDS slices such as train[:90%] kept)."""
  split = adapter.split_aliases.get(split, split)
  base = split.split("[")[0]
  if base not in builder.info.splits:
    raise ValueError(f"{adapter.name} has no split {base!r}; its splits: "
                     f"{', '.join(sorted(builder.info.splits))}")
  return split


def example_source(dataset, data_dir, split):
  """The ExampleSource of `split` of `tfds:<name>[/<config>]` prepared in `data_dir`."""
  # pylint: disable=import-outside-toplevel  (TensorFlow)
  import tensorflow as tf

  from hfgd_tf.data.decode import decode_mapped_example
  from hfgd_tf.data.sources import ExampleSource
  adapter = tfds_adapters.get_adapter(dataset)
  builder = load_builder(adapter, data_dir)
  tfds_split = resolve_split(adapter, builder, split)
  decoders = tfds.decode.PartialDecoding(
      {adapter.image_feature: True, adapter.label_feature: True, adapter.id_feature: True},
      decoders={adapter.image_feature: tfds.decode.SkipDecoding(),
                adapter.label_feature: tfds.decode.SkipDecoding()})

  def read(shuffle_seed=None, repeat=False, input_context=None):
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, input_context=input_context,
                                  try_autocache=False)
    ds = builder.as_dataset(split=tfds_split, decoders=decoders, read_config=read_config,
                            shuffle_files=shuffle_seed is not None)
    return ds.repeat() if repeat else ds

  def decode(element):
    example_id = element[adapter.id_feature]
    origin = tf.strings.join([f"{adapter.name}:{tfds_split}:", example_id])
    return decode_mapped_example(
        element[adapter.image_feature], element[adapter.label_feature], example_id,
        adapter.label_lut, origin, adapter.max_size)

  return ExampleSource(read, decode)
