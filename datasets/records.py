"""What a converted dataset folder looks like, shared by the shard writer and every reader.

No TensorFlow here: flag checks and converter workers use it too.

  <split>-00000-of-000NN.tfrecord   finished shards (the writer's names);
  <shard>.incomplete                a shard being written, never read;
  dataset_info.json                 written last: classes, palette, counts, format version.

Readers accept any `<split>-*.tfrecord` (the authors' iDS records are named that way too).
Records use the TF Model Garden / DeepLab keys below, so other TF tools read them as well.
"""

import os

FORMAT_VERSION = 1
INFO_FILENAME = "dataset_info.json"
INCOMPLETE_SUFFIX = ".incomplete"

IMAGE_KEY = "image/encoded"
IMAGE_FORMAT_KEY = "image/format"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"
CHANNELS_KEY = "image/channels"
FILENAME_KEY = "image/filename"
LABEL_KEY = "image/segmentation/class/encoded"
LABEL_FORMAT_KEY = "image/segmentation/class/format"


def shard_filename(split, index, num_shards):
  return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def finished_shard_pattern(split):
  """Glob matching the writer's finished shards of `split` (never the `.incomplete` ones)."""
  return f"{split}-?????-of-?????.tfrecord"


def split_files(data_dir, split):
  """Glob of the shards a reader takes for `split` in `data_dir` (ours and iDS's)."""
  return os.path.join(data_dir, f"{split}-*.tfrecord")


def info_path(data_dir):
  return os.path.join(data_dir, INFO_FILENAME)
