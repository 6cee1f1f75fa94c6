"""ResNet-50/101 identical in structure and weight names to `keras.applications.ResNet50/101`.

For users who want Keras' published ImageNet weights: the model IS the keras.applications one
(7x7 s2 stem with bias, stride on the first block of stages 2-4, BN eps 1.001e-5), built with
`weights=None` and re-wired to return the stride-keyed endpoints
  2: conv1_relu, 4: conv2_block3_out, 8: conv3_block4_out, 16: conv4_block6_out (conv4_block23_out
  for 101), 32: conv5_block3_out,
so `load_backbone_weights` (or `model.load_weights` on a file of the same architecture) maps every
variable by its Keras name.

Input range: keras.applications ResNet weights were trained on "caffe" inputs (BGR, ImageNet mean
subtracted, no scaling, roughly [-124, 152]); this project feeds [-1, 1] to every backbone (the
original's normalisation). With these weights, either fine-tune long enough for the first layers to
adapt, or convert the inputs back: bgr = (x + 1) * 127.5 reversed on the channel axis, minus the
mean [103.939, 116.779, 123.68]. A flag for that conversion belongs to the data pipeline (not here).
Output stride is 32 only: Keras' layout puts the stride on the first 1x1 conv of a stage, where
dilation would not replace it cleanly.
"""

import keras

from hfgd_tf.config import BN_MOMENTUM
from hfgd_tf.modeling.backbones import check_output_stride_32, register_configs

# name -> (keras.applications builder, blocks of stage 4)
CONFIGS = {
    "keras_resnet50": (keras.applications.ResNet50, 6),
    "keras_resnet101": (keras.applications.ResNet101, 23),
}


def build_keras_resnet(config, output_stride=32, drop_path_rate=None, sync_batch_norm=False,
                       bn_momentum=BN_MOMENTUM, name=None):
  """keras.applications ResNet without top, returning {2, 4, 8, 16, 32: features}."""
  del drop_path_rate  # no stochastic depth
  check_output_stride_32(name, output_stride)
  application, stage4_blocks = config
  base = application(include_top=False, weights=None, input_shape=(None, None, 3))
  for layer in base.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = bn_momentum
      layer.synchronized = sync_batch_norm
  endpoint_layers = {2: "conv1_relu", 4: "conv2_block3_out", 8: "conv3_block4_out",
                     16: f"conv4_block{stage4_blocks}_out", 32: "conv5_block3_out"}
  outputs = {stride: base.get_layer(layer).output for stride, layer in endpoint_layers.items()}
  return keras.Model(base.input, outputs, name=name)


register_configs(CONFIGS, build_keras_resnet)
