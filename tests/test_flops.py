"""The FLOPs counter against hand counts, and the per-component report of a tiny HFGD."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from hfgd_tf.config import ModelConfig
from hfgd_tf.flops import frozen_graph, graph_complexity, model_complexity
from hfgd_tf.modeling.model import build_model


def conv_net(dilation_rate=1):
  inputs = keras.Input((None, None, 3))
  x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
  x = keras.layers.Conv2D(16, 3, dilation_rate=dilation_rate, padding="same", use_bias=False)(x)
  x = keras.layers.DepthwiseConv2D(5, padding="same", use_bias=False)(x)
  x = keras.layers.Conv2D(4, 1, use_bias=False)(x)
  return keras.Model(inputs, x)


@pytest.mark.parametrize("dilation_rate", [1, 4])
def test_multiply_adds_of_a_small_conv_net_match_a_hand_count(dilation_rate):
  model = conv_net(dilation_rate)
  graph = frozen_graph(lambda x: model(x), [1, 33, 31, 3])
  counted = graph_complexity(graph)["total"]
  # "same" padding: the stride-2 conv gives ceil(33/2) x ceil(31/2) = 17 x 16 positions.
  positions = 17 * 16
  expected = positions * (3 * 3 * 3 * 8 + 3 * 3 * 8 * 16 + 5 * 5 * 16 + 16 * 4)
  assert counted.multiply_adds == expected
  assert counted.flops >= 2 * expected  # plus padding-free element-wise work, if any


def test_matmul_attention_is_counted():
  def attention(x):  # [1, 6, 5] -> q k^T [1, 6, 6] -> A v [1, 6, 5]
    return tf.linalg.matmul(tf.nn.softmax(tf.linalg.matmul(x, x, transpose_b=True)), x)
  counted = graph_complexity(frozen_graph(attention, [1, 6, 5]))["total"]
  assert counted.multiply_adds == 6 * 6 * 5 + 6 * 6 * 5


def test_tiny_hfgd_report_splits_by_component_and_sums_to_total():
  config = ModelConfig(num_classes=4, backbone="resnet_test", encoder_filters=32,
                       decoder_filters=16)
  model = build_model(config)
  report = model_complexity(model, 65, 65)
  assert {"backbone", "encoder", "decoder", "hfgm", "classifier", "total"} <= set(report)
  parts = [entry for name, entry in report.items() if name != "total"]
  assert sum(entry.multiply_adds for entry in parts) == report["total"].multiply_adds
  assert report["total"].params == sum(
      int(np.prod(v.shape)) for v in model.trainable_variables)
  # The axial attention at OS=4 on 17x17x16: 3 projections + 2 passes of maps and sums,
  # plus the class-kernel 1x1 conv (16 -> 4).
  size, channels = 17, 16
  expected_hfgm = (3 * size * size * channels * channels + 2 * 2 * size * size * size * channels
                   + size * size * channels * 4)
  assert report["hfgm"].multiply_adds == expected_hfgm
