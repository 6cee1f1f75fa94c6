"""One absl flag per config field (hfgd_tf/config.py): the field's name, type, default and help, so
each default is stated once, in its dataclass."""

import dataclasses
import typing

from absl import flags

from hfgd_tf.config import AugmentConfig, EvalConfig, ModelConfig, RunSettings, TrainConfig

# Every config that flags fill, in the order they are defined.
CONFIGS = (ModelConfig, TrainConfig, AugmentConfig, EvalConfig, RunSettings)
_KINDS = {bool: "bool", int: "integer", float: "float", str: "string"}


def flag_fields(config_class):
  """The fields of `config_class` that a flag sets."""
  return [field for field in dataclasses.fields(config_class)
          if field.metadata.get("flag", True)]


def flag_name(field):
  return field.metadata.get("name") or field.name


def _known_dataset(name):
  from datasets import get_dataset_info  # pylint: disable=import-outside-toplevel
  get_dataset_info(name)  # ValueError naming the known ones


def _help(config_class, field):
  doc = (field.metadata.get("doc")
         or f"{config_class.__name__}.{field.name} (see hfgd_tf/config.py).")
  if field.metadata.get("names_a_dataset"):
    # pylint: disable=import-outside-toplevel  (datasets is imported only when flags are defined)
    from datasets import dataset_names
    from datasets.tfds_adapters import ADAPTERS
    doc += (f" Converted: {', '.join(dataset_names())}; TensorFlow Datasets: "
            f"{', '.join(sorted(ADAPTERS))}.")
  return doc


def _kind(config_class, field):
  """The absl DEFINE_<kind> of a field: given, enum with choices, else from its scalar type."""
  if "kind" in field.metadata:
    return field.metadata["kind"]
  if field.metadata.get("choices"):
    return "enum"
  hint = typing.get_type_hints(config_class)[field.name]
  types = [arg for arg in typing.get_args(hint) if arg is not type(None)]  # Optional[X] -> X
  return _KINDS[types[0] if types else hint]


def _validator(check):
  def validate(value):
    try:
      check(value)
    except ValueError as error:
      raise flags.ValidationError(str(error)) from error
    return True
  return validate


def define_flags(config_class, flag_values=flags.FLAGS):
  """Defines the flag of each field of `config_class` (fields shared with another config are
  defined by that one)."""
  for field in flag_fields(config_class):
    if field.metadata.get("shared"):
      continue
    name, kind = flag_name(field), _kind(config_class, field)
    default = None if field.metadata.get("from_dataset") else field.default
    if kind == "list":
      default = [str(value) for value in default]
    options = {"enum_values": field.metadata["choices"]} if kind == "enum" else {}
    getattr(flags, f"DEFINE_{kind}")(name, default, help=_help(config_class, field),
                                     flag_values=flag_values, **options)
    check = (_known_dataset if field.metadata.get("names_a_dataset")
             else field.metadata.get("validator"))
    if check is not None:
      flags.register_validator(name, _validator(check), flag_values=flag_values)


def define_all_flags(flag_values=flags.FLAGS):
  """Every flag main.py understands: one per field of every config."""
  for config_class in CONFIGS:
    define_flags(config_class, flag_values)
