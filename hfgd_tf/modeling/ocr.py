"""OCR (object-contextual representations, Yuan et al. 2020) and the OCR encoder, one of the CAE
alternatives of Table 1."""

import keras
import tensorflow as tf

from hfgd_tf.modeling.layers.common import ConvNormAct


@keras.saving.register_keras_serializable("hfgd_tf")
class OCR(keras.layers.Layer):
  """OCR as the original CAR head builds it.

  A deep-supervision (DSN) branch (3x3 conv-BN-ReLU at the input width, then 1x1 logits) gives
  soft object regions (softmax over all pixels, per class); the 3x3-projected pixels (512) are
  pooled into one centre per class; pixels attend to the centres in 256-D (softmax over classes,
  scaled by 1/sqrt(256)); the context is projected back to 512, concatenated with the pixels and
  fused by a 1x1 conv-BN-ReLU.

  call(x, training) -> (features [N, H, W, filters], dsn_logits [N, H, W, num_classes]).
  """

  # The original creates these in build() (the head's, the object attention's), after its L2 was
  # set: never penalised (--weight_decay_scope=original, hfgd_tf/optimization.py). Its main
  # logits conv too: see SegmentationModel.original_late_sublayers.
  original_late_sublayers = ("dsn_conv", "dsn_logits", "up_conv")

  def __init__(self, num_classes, filters=512, key_filters=256, norm=None, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.filters = filters
    self.key_filters = key_filters
    self.norm = dict(norm or {})

  def build(self, input_shape):
    policy, norm = self.dtype_policy, self.norm
    self.dsn_conv = ConvNormAct(input_shape[-1], 3, name="dsn_conv", dtype=policy, **norm)
    self.dsn_logits = keras.layers.Conv2D(self.num_classes, 1, name="dsn_logits", dtype=policy)
    self.down_conv = ConvNormAct(self.filters, 3, name="down_conv", dtype=policy, **norm)
    self.query_convs = [ConvNormAct(self.key_filters, 1, name=f"query_conv{i}", dtype=policy,
                                    **norm) for i in (1, 2)]
    self.key_convs = [ConvNormAct(self.key_filters, 1, name=f"key_conv{i}", dtype=policy, **norm)
                      for i in (1, 2)]
    self.value_conv = ConvNormAct(self.key_filters, 1, name="value_conv", dtype=policy, **norm)
    self.up_conv = ConvNormAct(self.filters, 1, name="up_conv", dtype=policy, **norm)
    self.end_conv = ConvNormAct(self.filters, 1, name="end_conv", dtype=policy, **norm)

  def call(self, inputs, training=None):
    dsn_logits = self.dsn_logits(self.dsn_conv(inputs, training=training))
    pixels = self.down_conv(inputs, training=training)  # [N, H, W, filters]
    batch = tf.shape(pixels)[0]
    height, width = tf.shape(pixels)[1], tf.shape(pixels)[2]
    flat_pixels = tf.reshape(pixels, [batch, -1, self.filters])  # [N, HW, filters]
    # Soft object regions: per class, a softmax over all pixels -> [N, K, HW].
    regions = tf.nn.softmax(
        tf.cast(tf.transpose(tf.reshape(dsn_logits, [batch, -1, self.num_classes]), [0, 2, 1]),
                tf.float32), axis=-1)
    centers = tf.linalg.matmul(tf.cast(regions, pixels.dtype), flat_pixels)  # [N, K, filters]
    centers = centers[:, :, None, :]  # [N, K, 1, filters]: 1x1 convs act on class "pixels"

    query = pixels
    for conv in self.query_convs:
      query = conv(query, training=training)
    key = centers
    for conv in self.key_convs:
      key = conv(key, training=training)
    value = self.value_conv(centers, training=training)
    query = tf.reshape(query, [batch, -1, self.key_filters])  # [N, HW, d]
    key = tf.reshape(key, [batch, self.num_classes, self.key_filters])  # [N, K, d]
    value = tf.reshape(value, [batch, self.num_classes, self.key_filters])  # [N, K, d]
    energy = tf.linalg.matmul(query, key, transpose_b=True)  # [N, HW, K]
    attention = tf.nn.softmax(tf.cast(energy, tf.float32) * self.key_filters ** -0.5, axis=-1)
    context = tf.linalg.matmul(tf.cast(attention, value.dtype), value)  # [N, HW, d]
    context = tf.reshape(context, [batch, height, width, self.key_filters])
    context = self.up_conv(context, training=training)
    fused = self.end_conv(tf.concat([context, pixels], axis=-1), training=training)
    return fused, dsn_logits

  def get_config(self):
    config = super().get_config()
    config.update(num_classes=self.num_classes, filters=self.filters,
                  key_filters=self.key_filters, norm=self.norm)
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
