"""Self-attention and multi-head axial attention against naive numpy loops."""

import numpy as np
import pytest
import tensorflow as tf

from hfgd_tf.modeling.layers.axial_attention import AxialAttention
from hfgd_tf.modeling.layers.self_attention import SelfAttention


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def _conv1x1(x, conv):
  kernel = conv.kernel.numpy()[0, 0]
  return x @ kernel + conv.bias.numpy()


def test_self_attention_matches_numpy_loops():
  x = np.random.RandomState(0).randn(2, 3, 4, 6).astype(np.float32)
  layer = SelfAttention(key_filters=5, value_filters=7)
  out = layer(x).numpy()
  q, k, v = (_conv1x1(x, conv) for conv in (layer.query_conv, layer.key_conv, layer.value_conv))
  expected = np.zeros((2, 3, 4, 7), np.float32)
  for n in range(2):
    positions = [(h, w) for h in range(3) for w in range(4)]
    for (h, w) in positions:
      energy = np.array([q[n, h, w] @ k[n, j, i] for (j, i) in positions])  # no 1/sqrt(d)
      weights = _softmax(energy)
      expected[n, h, w] = sum(a * v[n, j, i] for a, (j, i) in zip(weights, positions))
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_self_attention_query_and_key_start_equal_then_train_apart():
  layer = SelfAttention(key_filters=4, value_filters=4)
  layer(tf.zeros([1, 2, 2, 3]))
  np.testing.assert_array_equal(layer.query_conv.kernel.numpy(), layer.key_conv.kernel.numpy())
  assert layer.query_conv.kernel is not layer.key_conv.kernel


def test_axial_attention_matches_numpy_loops():
  heads, channels, height, width = 2, 6, 3, 5
  x = np.random.RandomState(1).randn(2, height, width, channels).astype(np.float32)
  layer = AxialAttention(num_heads=heads)
  out = layer(x).numpy()
  q, k, v = (_conv1x1(x, conv) for conv in (layer.query_conv, layer.key_conv, layer.value_conv))
  d = channels // heads
  expected = np.zeros_like(out)
  for n in range(2):
    for head in range(heads):
      ch = slice(head * d, (head + 1) * d)  # the input splits head-major ...
      out_ch = slice(head, channels, heads)  # ... the output interleaves: channel c * heads + head
      # Along height, per column w: x1[i, w] = sum_j softmax_j(q[i,w].k[j,w]/sqrt(d)) v[j, w].
      x1 = np.zeros((height, width, d))
      for w in range(width):
        for i in range(height):
          weights = _softmax(np.array([q[n, i, w, ch] @ k[n, j, w, ch]
                                       for j in range(height)]) / np.sqrt(d))
          x1[i, w] = sum(weights[j] * v[n, j, w, ch] for j in range(height))
      # Along width, per row h, with maps from the same q and k.
      for h in range(height):
        for a in range(width):
          weights = _softmax(np.array([q[n, h, a, ch] @ k[n, h, b, ch]
                                       for b in range(width)]) / np.sqrt(d))
          expected[n, h, a, out_ch] = sum(weights[b] * x1[h, b] for b in range(width))
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def _original_axial_attention(query, key, value, heads):
  """numpy port of iSeg's MultiHeadAxialAttentionLayer.compute_attention, reshape for reshape."""
  n, h, w, c = value.shape
  d = c // heads

  def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  def split(x):
    return x.reshape(n, h, w, heads, d)  # [N, H, W, heads, d]

  v_map = split(query).transpose(0, 3, 2, 1, 4) @ split(key).transpose(0, 3, 2, 4, 1)
  u_map = split(query).transpose(0, 3, 1, 2, 4) @ split(key).transpose(0, 3, 1, 4, 2)
  v_map, u_map = softmax(v_map / np.sqrt(d)), softmax(u_map / np.sqrt(d))  # [N, heads, W, H, H]
  x = v_map @ split(value).transpose(0, 3, 2, 1, 4)  # [N, heads, W, H, d]
  x = u_map @ x.transpose(0, 1, 3, 2, 4)  # [N, heads, H, W, d]
  return x.transpose(0, 2, 3, 4, 1).reshape(n, h, w, c)  # [N, H, W, d, heads] -> [N, H, W, C]


def test_axial_attention_loads_original_weights_and_gives_its_outputs():
  heads, channels = 4, 8
  rng = np.random.RandomState(2)
  x = rng.randn(2, 5, 7, channels).astype(np.float32)
  layer = AxialAttention(num_heads=heads)
  layer.build(x.shape)
  weights = {}
  for name, conv in (("q", layer.query_conv), ("k", layer.key_conv), ("v", layer.value_conv)):
    weights[name] = (rng.randn(1, 1, channels, channels).astype(np.float32),
                     rng.randn(channels).astype(np.float32))
    conv.set_weights(list(weights[name]))
  q, k, v = (x @ weights[name][0][0, 0] + weights[name][1] for name in "qkv")
  np.testing.assert_allclose(layer(x).numpy(), _original_axial_attention(q, k, v, heads),
                             rtol=1e-4, atol=1e-5)


def test_axial_attention_rejects_channels_that_do_not_split_into_heads():
  with pytest.raises(ValueError, match="6 channels"):
    AxialAttention(num_heads=4)(tf.zeros([1, 2, 2, 6]))
