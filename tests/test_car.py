"""CAR losses against an independent numpy computation (reference section 5)."""

import numpy as np
import pytest
import tensorflow as tf

from hfgd_tf.modeling.car import ClassAwareRegularization, car_losses


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def numpy_car(features, labels, num_classes, ignore_label, c2c_threshold=0.5,
              c2p_threshold=0.25):
  """Pixel-by-pixel CAR losses, written from the formulas without vectorised tricks."""
  depth = features.shape[-1]
  pixels = features.reshape(-1, depth).astype(np.float64)
  labels = labels.reshape(-1)
  valid = labels != ignore_label
  classes = labels - 1 if ignore_label == 0 else labels
  centers = np.zeros((num_classes, depth))
  for k in range(num_classes):
    members = valid & (classes == k)
    if members.any():
      centers[k] = pixels[members].mean(axis=0)

  distance = sum(np.abs(centers[classes[p]] - pixels[p]).sum()
                 for p in range(len(pixels)) if valid[p])
  intra = max((distance / pixels.size) ** 2, 1e-5)

  margin = c2c_threshold / (num_classes - 1)
  excess = []
  for k in range(num_classes):
    attention = _softmax(centers[k] @ centers.T / np.sqrt(depth))
    excess.append(np.clip(sum(max(attention[j] - margin, 0) for j in range(num_classes) if j != k),
                          1e-7, 1 - 1e-7))
  c2c = np.mean(excess) ** 2

  margin = c2p_threshold / (num_classes - 1)
  excess = []
  for p in range(len(pixels)):
    own = classes[p] if valid[p] else None
    energy = np.array([centers[k] @ centers[k] if k == own else pixels[p] @ centers[k]
                       for k in range(num_classes)])
    attention = _softmax(energy / np.sqrt(depth))
    excess.append(np.clip(sum(max(attention[k] - margin, 0) for k in range(num_classes)
                              if k != own), 1e-7, 1 - 1e-7))
  c2p = np.mean(excess) ** 2
  return {"car_intra": intra, "car_c2c": c2c, "car_c2p": c2p}


def _check(features, labels, num_classes, ignore_label):
  ours = car_losses(tf.constant(features), tf.constant(labels), num_classes, ignore_label)
  expected = numpy_car(features, labels, num_classes, ignore_label)
  assert set(ours) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(float(ours[name]), value, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("ignore_label", [255, 0])
def test_car_losses_match_numpy_with_both_ignore_conventions(ignore_label):
  rng = np.random.RandomState(0)
  features = rng.randn(3, 4, 5, 8).astype(np.float32)
  classes = rng.randint(0, 6, size=(3, 4, 5))
  if ignore_label == 0:  # original Pascal Context convention: 0 ignored, classes 1..K
    labels = classes
  else:
    labels = np.where(classes == 5, 255, classes)
  _check(features, labels.astype(np.int32), num_classes=5, ignore_label=ignore_label)


def test_car_losses_with_absent_classes_and_mostly_ignored_pixels():
  rng = np.random.RandomState(1)
  features = rng.randn(2, 3, 3, 4).astype(np.float32)
  labels = np.full((2, 3, 3), 255, np.int32)
  labels[0, 0, :2] = 1
  labels[1, 2, 1] = 7  # classes 0, 2..6 and 8..9 absent
  _check(features, labels, num_classes=10, ignore_label=255)


def test_car_losses_grow_when_classes_overlap():
  """Well separated classes give lower inter-class losses than identical ones (can fail if the
  sign or the stop-gradient side were swapped)."""
  labels = np.array([[[0, 0, 1, 1, 2, 2]]], np.int32)
  separated = 5 * np.eye(3, dtype=np.float32)[labels]  # [1, 1, 6, 3]
  mixed = np.ones_like(separated)
  low = car_losses(tf.constant(separated), tf.constant(labels), 3, 255)
  high = car_losses(tf.constant(mixed), tf.constant(labels), 3, 255)
  assert float(low["car_c2c"]) < float(high["car_c2c"])
  assert float(low["car_c2p"]) < float(high["car_c2p"])


def test_intra_loss_gradient_does_not_flow_through_centres():
  """With all pixels of one class, the centre is their mean; a stop-gradient on it means the
  gradient of the intra loss is the plain sign of (x - c), not zero-sum through the centre."""
  features = tf.Variable(np.array([[[[1.0], [3.0], [8.0]]]], np.float32))
  labels = tf.constant([[[0, 0, 0]]], tf.int32)
  with tf.GradientTape() as tape:
    loss = car_losses(features, labels, 2, 255, use_c2c=False, use_c2p=False)["car_intra"]
  grad = tape.gradient(loss, features).numpy().ravel()
  mean_abs = (3 + 1 + 4) / 3
  expected = 2 * mean_abs * np.sign([1 - 4, 3 - 4, 8 - 4]) / 3
  np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_car_layer_resizes_labels_and_adds_losses_only_when_training():
  layer = ClassAwareRegularization(num_classes=4, filters=6, apply_convs=True,
                                   intra_loss_rate=2.0, inter_loss_rate=0.5)
  features = tf.random.normal([2, 5, 5, 10])
  labels = tf.random.uniform([2, 17, 17], 0, 4, dtype=tf.int32)
  outputs, losses = layer(features, labels=labels, training=True)
  assert outputs.shape == (2, 5, 5, 6)
  assert set(losses) == {"car_intra", "car_c2c", "car_c2p"}
  # Labels nearest-resized with aligned corners from 17 to 5 sample rows/cols 0, 4, 8, 12, 16.
  projected = layer.linear_conv(features)
  raw = car_losses(projected, tf.gather(tf.gather(labels, [0, 4, 8, 12, 16], axis=1),
                                        [0, 4, 8, 12, 16], axis=2), 4, 255)
  np.testing.assert_allclose(float(losses["car_intra"]), 2.0 * float(raw["car_intra"]), rtol=1e-5)
  np.testing.assert_allclose(float(losses["car_c2p"]), 0.5 * float(raw["car_c2p"]), rtol=1e-5)
  _, no_losses = layer(features, labels=labels, training=False)
  assert no_losses == {}
