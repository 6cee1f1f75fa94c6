"""What the flags point at must be there: the data folder (or prepared TFDS dataset) of the splits
the mode reads, matching the dataset asked for, the backbone weights and predict's input."""

from datasets import records
from datasets.tfds_adapters import is_tfds_name

from hfgd_tf.atomic_files import gfile
from hfgd_tf.flags.values import fail
from hfgd_tf.modeling.backbones.iseg_release import check_spec as check_backbone_weights


def _check_dataset_info(data_dir, dataset_info, splits):
  """A converted folder's dataset_info.json must describe the dataset the flags ask for."""
  from datasets import dataset_info as info_file  # pylint: disable=import-outside-toplevel
  try:
    info_file.check_info(data_dir, dataset_info, splits)
  except info_file.DataDirError as error:
    fail("data_dir", str(error))


def _check_tfds_data(train, splits):
  """A TFDS dataset must be prepared in --data_dir and have the splits the run reads."""
  # pylint: disable=import-outside-toplevel  (tensorflow-datasets only for tfds: datasets)
  try:
    from hfgd_tf.data import tfds_source
  except ImportError as error:
    fail("dataset", f"{train.dataset} needs tensorflow-datasets ({error}); pip install -r "
         "requirements-tfds.txt")
  from datasets.tfds_adapters import get_adapter
  adapter = get_adapter(train.dataset)
  try:
    builder = tfds_source.load_builder(adapter, train.data_dir)
  except tfds_source.DatasetNotPreparedError as error:
    fail("data_dir", str(error))
  for split in splits:
    try:
      tfds_source.resolve_split(adapter, builder, split)
    except ValueError as error:
      fail("train_split" if split == train.train_split else "eval_split", str(error))


def _check_data_dir(train, dataset_info, needs_data, splits):
  if train.data_dir is None:
    if needs_data and train.dataset != "builtin":
      fail("data_dir", f"required for dataset={train.dataset} (the folder of its converted "
           "<split>-*.tfrecord shards; see datasets/convert.py)")
    return
  if gfile().isdir(train.data_dir):  # any TF filesystem: a local folder, gs://, ...
    _check_dataset_info(train.data_dir, dataset_info, splits)
  if train.dataset == "builtin" or not needs_data:
    return  # The built-in dataset is generated on demand.
  if not gfile().isdir(train.data_dir):
    fail("data_dir", f"{train.data_dir} is not a folder")
  for split in splits:
    if not gfile().glob(records.split_files(train.data_dir, split)):
      fail("data_dir", f"no {split}-*.tfrecord shards in {train.data_dir} (split of "
           f"dataset {dataset_info.name}; check --train_split/--eval_split)")


def check_inputs(settings):
  """FlagError naming the flag when the data, weights or images a run of `settings.mode` reads are
  not there (training: the train split, and the eval split when it evaluates; eval: the eval
  split; predict: --predict_input)."""
  train, mode = settings.train, settings.mode
  check_backbone_weights(train.backbone_weights, settings.model.backbone)
  needs_data = mode in ("train", "eval")
  splits = {"train": [train.train_split, train.eval_split] if train.eval_every or
                     train.eval_after_train else [train.train_split],
            "eval": [train.eval_split]}.get(mode, [])
  if is_tfds_name(train.dataset):
    if needs_data:
      _check_tfds_data(train, splits)
  else:
    _check_data_dir(train, settings.dataset_info, needs_data, splits)
  if mode == "predict" and settings.predict_input is None:
    fail("predict_input", "required for mode=predict (a folder or a glob of images)")
