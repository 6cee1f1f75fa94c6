"""CAE, the context-augmented encoder (paper Sec. 3.2), and the alternatives of Table 1.

Every encoder works on the backbone's deepest features and returns a dict:
  features   [N, h, w, C_out] context features (CAE: 256-D, the input of the class kernels);
  losses     dict of named scalar losses (CAR's, when training with labels);
  aux_logits optional [N, h, w, K] auxiliary logits (OCR's deep supervision).
`build_encoder(config)` maps `config.encoder` to one of them through the ENCODERS registry.
"""

import keras

from hfgd_tf.car import ClassAwareRegularization
from hfgd_tf.layers.aspp import ASPP
from hfgd_tf.layers.common import ConvNormAct
from hfgd_tf.layers.ocr import OCR
from hfgd_tf.layers.self_attention import SelfAttention
from hfgd_tf.registry import Registry

ENCODERS = Registry("encoder")


def norm_kwargs(config):
  """The batch-norm arguments every head layer takes, from the model config."""
  return dict(sync_batch_norm=config.sync_batch_norm, bn_momentum=config.bn_momentum,
              bn_epsilon=config.head_bn_epsilon)


def car_kwargs(config):
  """The CAR arguments (losses, thresholds, rates) from the model config."""
  return dict(num_classes=config.num_classes, ignore_label=config.ignore_label,
              use_intra_loss=config.car_intra_loss, use_c2c_loss=config.car_c2c_loss,
              use_c2p_loss=config.car_c2p_loss, intra_loss_rate=config.car_intra_loss_rate,
              inter_loss_rate=config.car_inter_loss_rate, c2c_threshold=config.car_c2c_threshold,
              c2p_threshold=config.car_c2p_threshold, align_corners=config.align_corners)


@keras.saving.register_keras_serializable("hfgd_tf")
class ContextAugmentedEncoder(keras.layers.Layer):
  """CAE (ours): two leading conv-BN-ReLU to 512-D, full self-attention with a residual, CAR on
  the result, and a trailing 1x1 conv-BN-ReLU to the decoder width.

  With `car_filters` equal to `output_filters` the trailing conv is CAR's own end conv (our
  reading of the paper, reference 10.5.1); otherwise CAR keeps its width and a separate 1x1
  conv-BN-ReLU brings it to `output_filters`.
  """

  def __init__(self, filters=512, kernel_size=1, car_filters=256, output_filters=256,
               car=None, norm=None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.kernel_size = kernel_size
    self.car_filters = car_filters
    self.output_filters = output_filters
    self.car_args = dict(car or {})
    self.norm = dict(norm or {})
    policy = self.dtype_policy
    self.leading_convs = [
        ConvNormAct(filters, kernel_size, name=f"leading_conv{i}", dtype=policy, **self.norm)
        for i in (1, 2)]
    self.attention = SelfAttention(64, filters, name="self_attention", dtype=policy)
    self.car = ClassAwareRegularization(filters=car_filters, apply_convs=True, name="car",
                                        dtype=policy, **self.car_args, **self.norm)
    self.trailing_conv = (ConvNormAct(output_filters, 1, name="trailing_conv", dtype=policy,
                                      **self.norm)
                          if car_filters != output_filters else None)

  def call(self, inputs, labels=None, training=None):
    x = inputs
    for conv in self.leading_convs:
      x = conv(x, training=training)
    x = x + self.attention(x)
    x, losses = self.car(x, labels=labels, training=training)
    if self.trailing_conv is not None:
      x = self.trailing_conv(x, training=training)
    return {"features": x, "losses": losses}

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, kernel_size=self.kernel_size,
                  car_filters=self.car_filters, output_filters=self.output_filters,
                  car=self.car_args, norm=self.norm)
    return config


@keras.saving.register_keras_serializable("hfgd_tf")
class NonLocalEncoder(keras.layers.Layer):
  """The CAR paper's NL head: 3x3 conv-BN-ReLU to 512, x + SA(x), then either CAR (512, with its
  1x1 end conv; "SA + CAR", the D8 baseline of Table 5) or a 3x3 conv-BN-ReLU ("Self-Attention"
  of Table 1)."""

  def __init__(self, filters=512, use_car=False, car=None, norm=None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.use_car = use_car
    self.car_args = dict(car or {})
    self.norm = dict(norm or {})
    policy = self.dtype_policy
    self.down_conv = ConvNormAct(filters, 3, name="down_conv", dtype=policy, **self.norm)
    self.attention = SelfAttention(64, filters, name="self_attention", dtype=policy)
    if use_car:
      self.car = ClassAwareRegularization(filters=filters, apply_convs=True, name="car",
                                          dtype=policy, **self.car_args, **self.norm)
    else:
      self.end_conv = ConvNormAct(filters, 3, name="end_conv", dtype=policy, **self.norm)

  def call(self, inputs, labels=None, training=None):
    x = self.down_conv(inputs, training=training)
    x = x + self.attention(x)
    if self.use_car:
      x, losses = self.car(x, labels=labels, training=training)
    else:
      x, losses = self.end_conv(x, training=training), {}
    return {"features": x, "losses": losses}

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, use_car=self.use_car, car=self.car_args, norm=self.norm)
    return config


@keras.saving.register_keras_serializable("hfgd_tf")
class ASPPEncoder(keras.layers.Layer):
  """ASPP (256 per branch) followed by a 1x1 conv-BN-ReLU to 256, as the CAR DeepLab head."""

  def __init__(self, filters=256, output_stride=32, norm=None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.output_stride = output_stride
    self.norm = dict(norm or {})
    self.aspp = ASPP(filters, output_stride, self.norm, name="aspp", dtype=self.dtype_policy)
    self.end_conv = ConvNormAct(filters, 1, name="end_conv", dtype=self.dtype_policy,
                                **self.norm)

  def call(self, inputs, labels=None, training=None):
    del labels  # no label-aware losses
    x = self.end_conv(self.aspp(inputs, training=training), training=training)
    return {"features": x, "losses": {}}

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, output_stride=self.output_stride, norm=self.norm)
    return config


@keras.saving.register_keras_serializable("hfgd_tf")
class OCREncoder(keras.layers.Layer):
  """OCR with its deep-supervision logits returned as auxiliary logits."""

  def __init__(self, num_classes, filters=512, norm=None, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.filters = filters
    self.norm = dict(norm or {})
    self.ocr = OCR(num_classes, filters, norm=self.norm, name="ocr", dtype=self.dtype_policy)

  def call(self, inputs, labels=None, training=None):
    del labels
    features, dsn_logits = self.ocr(inputs, training=training)
    return {"features": features, "losses": {}, "aux_logits": dsn_logits}

  def get_config(self):
    config = super().get_config()
    config.update(num_classes=self.num_classes, filters=self.filters, norm=self.norm)
    return config


@keras.saving.register_keras_serializable("hfgd_tf")
class IdentityEncoder(keras.layers.Layer):
  """No context encoding: the backbone features as they are (Table 1, "Identity")."""

  def call(self, inputs, labels=None, training=None):
    del labels, training
    return {"features": inputs, "losses": {}}


@ENCODERS.register("cae")
def _build_cae(config, name):
  return ContextAugmentedEncoder(
      config.encoder_filters, config.cae_kernel_size, config.cae_car_filters,
      config.decoder_filters, car=car_kwargs(config), norm=norm_kwargs(config), name=name)


@ENCODERS.register("sa_car")
def _build_sa_car(config, name):
  return NonLocalEncoder(config.encoder_filters, use_car=True, car=car_kwargs(config),
                         norm=norm_kwargs(config), name=name)


@ENCODERS.register("sa")
def _build_sa(config, name):
  return NonLocalEncoder(config.encoder_filters, use_car=False, norm=norm_kwargs(config),
                         name=name)


@ENCODERS.register("aspp")
def _build_aspp(config, name):
  return ASPPEncoder(config.decoder_filters, config.backbone_output_stride,
                     norm=norm_kwargs(config), name=name)


@ENCODERS.register("ocr")
def _build_ocr(config, name):
  return OCREncoder(config.num_classes, config.encoder_filters, norm=norm_kwargs(config),
                    name=name)


@ENCODERS.register("identity")
def _build_identity(config, name):
  del config
  return IdentityEncoder(name=name)


def build_encoder(config, name="encoder"):
  return ENCODERS.get(config.encoder)(config, name)
