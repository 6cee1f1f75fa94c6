"""CAR: class-aware regularization (Huang et al., ECCV 2022), as CAE uses it.

A linear 1x1 projection X of the features is pulled towards its class centres (intra-class loss)
while the centres are pushed apart from each other (centre-to-centre) and from pixels of other
classes (centre-to-pixel). All three losses are computed in float32 on X; the centres are summed
over the local batch and all-reduced across replicas, so every replica sees the global-batch
centres. Formulas follow the original `car_core/car.py` exactly (reference section 5):

  c_k   = sum_{n,p} Y_npk X_np / sum_{n,p} Y_npk        (0 for classes absent from the batch)
  intra = max( (mean_{n,p,c} v_np |sg(c_{y_np}) - X_np|_c)^2, 1e-5 )
  c2c   = ( mean_k clip(sum_{j!=k} relu(A_kj - t_cc/(K-1))) )^2,
          A = softmax_j(c_k.sg(c_j)/sqrt(C'))
  c2p   = ( mean_{n,p} clip(sum_{k!=y} relu(Q_npk - t_cp/(K-1))) )^2,
          Q = softmax_k(E/sqrt(C')), E_npk = X_np.sg(c_k), E_np,y = |sg(c_y)|^2

Means run over all pixels, ignored ones included (they add 0 to intra but count in its
denominator, and count as "other" for every class in c2p); absent classes count in c2c; the square
comes after the mean.
"""

import keras
import tensorflow as tf

from hfgd_tf.config import CAR_END_BN_MOMENTUM, HEAD_BN_EPSILON, IGNORE_LABEL
from hfgd_tf.modeling.layers.common import ConvNormAct
from hfgd_tf.ops import resize

_CLIP = 1e-7


def one_hot_labels(labels, num_classes, ignore_label):
  """Labels [...] -> one-hot [..., K] float32, all-zero for ignored pixels.

  With ignore_label == 0 (the original Pascal Context convention) classes are 1..K; otherwise
  classes are 0..K-1 and `ignore_label` (e.g. 255) lies outside them.
  """
  labels = tf.cast(labels, tf.int32)
  class_ids = labels - 1 if ignore_label == 0 else labels
  class_ids = tf.where(tf.equal(labels, ignore_label), -1, class_ids)
  return tf.one_hot(class_ids, num_classes, dtype=tf.float32)  # -1 and >= K give zeros


def class_centers(features, one_hot):
  """Global-batch class centres [K, C'] from features [M, C'] and one-hot [M, K].

  Sums and pixel counts are all-reduced across replicas when running under a multi-replica
  strategy, so every replica gets the centres of the global batch.
  """
  sums = tf.linalg.matmul(one_hot, features, transpose_a=True)  # [K, C']
  counts = tf.reduce_sum(one_hot, axis=0)  # [K]
  context = tf.distribute.get_replica_context()
  if context is not None and context.num_replicas_in_sync > 1:
    sums, counts = context.all_reduce(tf.distribute.ReduceOp.SUM, [sums, counts])
  return tf.math.divide_no_nan(sums, counts[:, None])


def intra_class_loss(features, one_hot, centers):
  """Mean absolute distance of each valid pixel to its (stop-gradient) class centre, squared."""
  own_centers = tf.linalg.matmul(one_hot, tf.stop_gradient(centers))  # [M, C'], 0 if ignored
  valid = tf.reduce_sum(one_hot, axis=-1, keepdims=True)  # [M, 1]
  distance = tf.reduce_mean(tf.abs(own_centers - features) * valid)
  return tf.maximum(tf.square(distance), 1e-5)


def inter_class_center_loss(centers, threshold=0.5):
  """Centre-to-centre: each centre's attention to the other centres beyond t/(K-1), squared."""
  num_classes = tf.shape(centers)[0]
  depth = tf.cast(tf.shape(centers)[1], tf.float32)
  energy = tf.linalg.matmul(centers, tf.stop_gradient(centers), transpose_b=True)
  attention = tf.nn.softmax(energy / tf.sqrt(depth), axis=-1)  # [K, K]
  others = 1.0 - tf.eye(num_classes)
  margin = threshold / tf.cast(num_classes - 1, tf.float32)
  excess = tf.reduce_sum(tf.nn.relu(attention - margin) * others, axis=-1)  # [K]
  excess = tf.clip_by_value(excess, _CLIP, 1.0 - _CLIP)
  return tf.square(tf.reduce_mean(excess))


def inter_class_pixel_loss(features, one_hot, centers, threshold=0.25):
  """Centre-to-pixel: each pixel's attention to other classes' centres beyond t/(K-1), squared."""
  centers = tf.stop_gradient(centers)
  num_classes = tf.shape(centers)[0]
  depth = tf.cast(tf.shape(centers)[1], tf.float32)
  energy = tf.linalg.matmul(features, centers, transpose_b=True)  # [M, K]
  self_energy = tf.reduce_sum(tf.square(centers), axis=-1)  # [K]
  energy = energy * (1.0 - one_hot) + one_hot * self_energy[None, :]
  attention = tf.nn.softmax(energy / tf.sqrt(depth), axis=-1)
  margin = threshold / tf.cast(num_classes - 1, tf.float32)
  excess = tf.reduce_sum(tf.nn.relu(attention - margin) * (1.0 - one_hot), axis=-1)  # [M]
  excess = tf.clip_by_value(excess, _CLIP, 1.0 - _CLIP)
  return tf.square(tf.reduce_mean(excess))


def car_losses(features, labels, num_classes, ignore_label=IGNORE_LABEL, use_intra=True,
               use_c2c=True, use_c2p=True, c2c_threshold=0.5, c2p_threshold=0.25):
  """The CAR losses of features [N, H, W, C'] against labels [N, H, W] at the same size.

  Returns a dict with the enabled terms among `car_intra`, `car_c2c`, `car_c2p` (float32 scalars,
  unweighted).
  """
  depth = features.shape[-1]
  features = tf.reshape(tf.cast(features, tf.float32), [-1, depth])  # [N*H*W, C']
  one_hot = tf.reshape(one_hot_labels(labels, num_classes, ignore_label), [-1, num_classes])
  centers = class_centers(features, one_hot)
  losses = {}
  if use_intra:
    losses["car_intra"] = intra_class_loss(features, one_hot, centers)
  if use_c2c:
    losses["car_c2c"] = inter_class_center_loss(centers, c2c_threshold)
  if use_c2p:
    losses["car_c2p"] = inter_class_pixel_loss(features, one_hot, centers, c2p_threshold)
  return losses


@keras.saving.register_keras_serializable("hfgd_tf")
class ClassAwareRegularization(keras.layers.Layer):
  """CAR block: linear 1x1 conv (with bias) to C' = min(C_in, filters), the CAR losses on its
  float32 output, then optionally a 1x1 conv + BN + ReLU (`apply_convs`, the original's end_conv).

  call(features, labels=None, training=None) -> (outputs, losses). Labels [N, H0, W0] at any size
  are nearest-resized (align corners) to the feature size; losses are computed only when training
  with labels, scaled by the intra/inter rates (inter = c2c + c2p, as the original adds them).
  """

  # The original creates both convs in build(), after its L2 was set: never penalised
  # (--weight_decay_scope=original, hfgd_tf/optimization.py).
  original_late_sublayers = ("linear_conv", "end_conv")

  def __init__(self, num_classes, filters=512, apply_convs=True, ignore_label=IGNORE_LABEL,
               use_intra_loss=True, use_c2c_loss=True, use_c2p_loss=True,
               intra_loss_rate=1.0, inter_loss_rate=1.0, c2c_threshold=0.5, c2p_threshold=0.25,
               align_corners=True, sync_batch_norm=False, bn_momentum=CAR_END_BN_MOMENTUM,
               bn_epsilon=HEAD_BN_EPSILON, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.filters = filters
    self.apply_convs = apply_convs
    self.ignore_label = ignore_label
    self.use_intra_loss = use_intra_loss
    self.use_c2c_loss = use_c2c_loss
    self.use_c2p_loss = use_c2p_loss
    self.intra_loss_rate = intra_loss_rate
    self.inter_loss_rate = inter_loss_rate
    self.c2c_threshold = c2c_threshold
    self.c2p_threshold = c2p_threshold
    self.align_corners = align_corners
    self.sync_batch_norm = sync_batch_norm
    self.bn_momentum = bn_momentum
    self.bn_epsilon = bn_epsilon

  def build(self, input_shape):
    depth = min(input_shape[-1], self.filters)
    self.linear_conv = keras.layers.Conv2D(depth, 1, name="linear_conv", dtype=self.dtype_policy)
    self.linear_conv.build(input_shape)
    if self.apply_convs:
      self.end_conv = ConvNormAct(depth, 1, sync_batch_norm=self.sync_batch_norm,
                                  bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                                  name="end_conv", dtype=self.dtype_policy)
      self.end_conv.build(tuple(input_shape[:-1]) + (depth,))

  def call(self, inputs, labels=None, training=None):
    projected = self.linear_conv(inputs)
    losses = {}
    if training and labels is not None:
      size = tf.shape(projected)[1:3]
      labels = resize(tf.cast(labels, tf.int32)[..., None], size, self.align_corners,
                      method="nearest")[..., 0]
      raw = car_losses(projected, labels, self.num_classes, self.ignore_label,
                       self.use_intra_loss, self.use_c2c_loss, self.use_c2p_loss,
                       self.c2c_threshold, self.c2p_threshold)
      rates = {"car_intra": self.intra_loss_rate, "car_c2c": self.inter_loss_rate,
               "car_c2p": self.inter_loss_rate}
      losses = {name: value * rates[name] for name, value in raw.items()}
    outputs = self.end_conv(projected, training=training) if self.apply_convs else projected
    return outputs, losses

  def get_config(self):
    config = super().get_config()
    config.update(
        num_classes=self.num_classes, filters=self.filters, apply_convs=self.apply_convs,
        ignore_label=self.ignore_label, use_intra_loss=self.use_intra_loss,
        use_c2c_loss=self.use_c2c_loss, use_c2p_loss=self.use_c2p_loss,
        intra_loss_rate=self.intra_loss_rate, inter_loss_rate=self.inter_loss_rate,
        c2c_threshold=self.c2c_threshold, c2p_threshold=self.c2p_threshold,
        align_corners=self.align_corners, sync_batch_norm=self.sync_batch_norm,
        bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)
    return config


def car_norm_kwargs(norm):
  """CAR's batch-norm arguments from its head's (`norm_kwargs`): the same but for the end BN's
  momentum, Keras' default 0.9 whatever --bn_momentum says, as in the original
  (CAR_END_BN_MOMENTUM)."""
  return dict(norm, bn_momentum=CAR_END_BN_MOMENTUM)


def car_kwargs(config):
  """The CAR arguments (losses, thresholds, rates) from the model config."""
  return dict(num_classes=config.num_classes, ignore_label=config.ignore_label,
              use_intra_loss=config.car_intra_loss, use_c2c_loss=config.car_c2c_loss,
              use_c2p_loss=config.car_c2p_loss, intra_loss_rate=config.car_intra_loss_rate,
              inter_loss_rate=config.car_inter_loss_rate, c2c_threshold=config.car_c2c_threshold,
              c2p_threshold=config.car_c2p_threshold, align_corners=config.align_corners)
