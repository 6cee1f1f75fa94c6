"""Backbones: image -> dict of features keyed by output stride.

Contract every backbone builder follows (registered in `BACKBONES` under a flag value):

  builder(output_stride=32, drop_path_rate=None, sync_batch_norm=False, bn_momentum=BN_MOMENTUM,
          name=None) -> keras.Model

  * input: float images [N, H, W, 3], already normalised to [-1, 1] (x * 2/255 - 1), any H and W;
  * output: dict {stride: tensor [N, ceil(H/stride), ceil(W/stride), C_stride]} for the strides
    4, 8, 16, 32 (and 2 where the backbone has an OS=2 feature). With output_stride < 32 (dilated
    backbones) the deeper levels keep their key but stay at output_stride resolution;
  * `drop_path_rate=None` means the backbone's own default (e.g. 0.3 for ConvNeXt-L);
  * backbones that have no batch norm ignore the batch-norm arguments.
"""

from hfgd_tf.config import BN_MOMENTUM
from hfgd_tf.registry import Registry

BACKBONES = Registry("backbone")


def register_configs(configs, build):
  """Registers each `{name: config}` as backbone `name`, built by `build(config, output_stride,
  drop_path_rate, sync_batch_norm, bn_momentum, name)`: the family's one builder, which takes the
  contract's arguments and rejects the values its family cannot build."""
  for config_name, config in configs.items():
    def builder(output_stride=32, drop_path_rate=None, sync_batch_norm=False,
                bn_momentum=BN_MOMENTUM, name=None, _config=config, _config_name=config_name):
      return build(_config, output_stride=output_stride, drop_path_rate=drop_path_rate,
                   sync_batch_norm=sync_batch_norm, bn_momentum=bn_momentum,
                   name=name or _config_name)
    builder.__name__ = f"build_{config_name}"
    builder.__doc__ = f"{config_name}: {config}."
    BACKBONES.register(config_name)(builder)


def check_output_stride_32(name, output_stride):
  """ValueError for an output stride other than 32 (families that cannot dilate)."""
  if output_stride != 32:
    raise ValueError(f"{name} supports output_stride 32 only, got {output_stride}")


def build_backbone(backbone, **kwargs):
  """Builds the backbone registered as `backbone` (see the module docstring for the contract)."""
  _import_builders()
  return BACKBONES.get(backbone)(**kwargs)


def _import_builders():
  # Importing the modules registers their builders; done lazily to keep `import hfgd_tf` light.
  import importlib  # pylint: disable=import-outside-toplevel
  import pkgutil  # pylint: disable=import-outside-toplevel
  for module in pkgutil.iter_modules(__path__):
    if not module.name.startswith("_"):
      importlib.import_module(f"{__name__}.{module.name}")
