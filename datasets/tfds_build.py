r"""Prepares a TensorFlow Datasets dataset that a `tfds:` adapter reads (what `tfds build` does).

  python3 -m datasets.tfds_build --dataset=tfds:oxford_iiit_pet --data_dir=/data/tfds

tensorflow-datasets 4.9.10's own `tfds build` CLI imports apache-beam at start, and apache-beam
needs protobuf 6 where TensorFlow 2.21 has protobuf 7, so this calls the same
`builder.download_and_prepare` directly. Datasets behind a registration (Cityscapes) need their
downloaded archives in --manual_dir. Training never downloads; it reads what this wrote.
"""

import sys

from absl import app, flags, logging

from datasets import tfds_adapters

_DATASET = flags.DEFINE_string("dataset", None, "tfds:<name>[/<config>] with an adapter.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder; default: TFDS's own.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None,
                                  "Folder with manually downloaded archives (Cityscapes).")
flags.mark_flag_as_required("dataset")


def prepare(name, data_dir=None, manual_dir=None):
  """Downloads (or reads from manual_dir) and prepares `name`; returns the prepared folder."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  adapter = tfds_adapters.get_adapter(name)
  builder = tfds.builder(adapter.tfds_name, data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder.data_dir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    path = prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value)
  except ValueError as error:
    sys.exit(f"error: --dataset: {error}")
  logging.info("prepared %s in %s", _DATASET.value, path)


if __name__ == "__main__":
  app.run(main)
