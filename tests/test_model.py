"""Model assembly: gradient routing of HFGM, output shapes, config round trips, mixed precision."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from hfgd_tf.config import ModelConfig
from hfgd_tf.modeling.losses import cross_entropy, segmentation_losses
from hfgd_tf.modeling.model import SegmentationModel, build_model

NUM_CLASSES = 4


def tiny_config(**overrides):
  values = dict(num_classes=NUM_CLASSES, backbone="resnet_test", encoder_filters=32,
                decoder_filters=16)
  values.update(overrides)
  return ModelConfig(**values)


def batch(size=65, seed=0):
  rng = np.random.RandomState(seed)
  images = rng.uniform(-1, 1, size=(2, size, size, 3)).astype(np.float32)
  labels = rng.randint(0, NUM_CLASSES + 1, size=(2, size, size)).astype(np.int32)
  labels[labels == NUM_CLASSES] = 255
  return tf.constant(images), tf.constant(labels)


def gradients_by_component(model, loss_fn):
  """{component: list of gradients (None = not connected)} of one loss."""
  images, labels = batch()
  with tf.GradientTape() as tape:
    outputs = model({"image": images, "label": labels}, training=True)
    loss = loss_fn(outputs, labels)
  parts = model.components()
  grads = tape.gradient(loss, [part.trainable_variables for part in parts.values()])
  return dict(zip(parts, grads))


def is_zero(grads):
  return all(g is None or not np.any(g.numpy()) for g in grads)


@pytest.fixture(scope="module")
def model_of_stride():
  """The float32 tiny HFGD of each decoder output stride, built once for the module's tests that
  only call it (a build costs more than the calls at these sizes)."""
  models = {}

  def model(output_stride):
    if output_stride not in models:
      models[output_stride] = build_model(tiny_config(decoder_output_stride=output_stride))
    return models[output_stride]
  return model


def main_loss(outputs, labels):
  return cross_entropy(outputs["logits"], labels)


def cae_and_car_losses(outputs, labels):
  return cross_entropy(outputs["cae_logits"], labels) + tf.add_n(list(outputs["losses"].values()))


@pytest.mark.parametrize("overrides", [
    dict(decoder_output_stride=4),
    dict(decoder_output_stride=2),
    dict(hfgm_axial_attention=False),
], ids=["os4", "os2", "no_axial_attention"])
def test_hfgm_gradient_routing(overrides):
  model = build_model(tiny_config(**overrides))
  main = gradients_by_component(model, main_loss)
  # The main loss trains only the decoder and the axial attention...
  for component in ("backbone", "encoder", "classifier"):
    assert is_zero(main[component]), f"main loss reached the {component}"
  assert not is_zero(main["decoder"])
  if overrides.get("hfgm_axial_attention", True):
    assert not is_zero(main["hfgm"])
  else:
    assert not model.hfgm.trainable_variables
  # ...and the OS=32 path (CAE CE + CAR) trains everything except them.
  deep = gradients_by_component(model, cae_and_car_losses)
  for component in ("decoder", "hfgm"):
    assert is_zero(deep[component]), f"CAE/CAR losses reached the {component}"
  for component in ("backbone", "encoder", "classifier"):
    assert not is_zero(deep[component]), f"CAE/CAR losses did not reach the {component}"
  stem_kernel = model.backbone.trainable_variables[0]
  assert "stem" in stem_kernel.path
  assert not is_zero([deep["backbone"][0]])


@pytest.mark.parametrize("overrides", [
    dict(hfgm=False),
    dict(hfgm=False, encoder="identity", decoder="sfpn"),
], ids=["cae_usfpn", "identity_sfpn"])
def test_baselines_without_hfgm_let_the_main_loss_reach_the_backbone(overrides):
  model = build_model(tiny_config(**overrides))
  main = gradients_by_component(model, main_loss)
  for component in ("backbone", "encoder", "decoder", "classifier"):
    if model.components()[component].trainable_variables:
      assert not is_zero(main[component]), component
  assert not is_zero([main["backbone"][0]])


@pytest.mark.parametrize("size", [513, 64, 65, 97, 100])
@pytest.mark.parametrize("output_stride", [4, 2])
def test_outputs_at_input_resolution(size, output_stride, model_of_stride):
  model = model_of_stride(output_stride)
  images, labels = batch(size)
  outputs = model({"image": images, "label": labels}, training=True)
  for name in ("logits", "cae_logits"):
    assert outputs[name].shape == (2, size, size, NUM_CLASSES)
    assert outputs[name].dtype == tf.float32
  assert model(images, training=False).shape == (2, size, size, NUM_CLASSES)


def test_non_square_dynamic_shape_in_a_graph(model_of_stride):
  model = model_of_stride(2)
  serve = tf.function(lambda x: model(x, training=False),
                      input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
  assert serve(tf.zeros([1, 70, 45, 3])).shape == (1, 70, 45, NUM_CLASSES)


@pytest.mark.parametrize("overrides,outputs", [
    (dict(), {"logits", "cae_logits", "losses"}),
    (dict(hfgm=False), {"logits", "losses"}),
    (dict(hfgm=False, decoder="none"), {"logits", "losses"}),
    (dict(hfgm=False, decoder="none", encoder="sa_car", backbone_output_stride=8),
     {"logits", "losses"}),
    (dict(hfgm=False, decoder="sfpn", encoder="ocr"), {"logits", "aux_logits", "losses"}),
    (dict(hfgm=False, decoder="sfpn", encoder="aspp"), {"logits", "losses"}),
    (dict(hfgm=False, decoder="none", encoder="sa"), {"logits", "losses"}),
], ids=["hfgd", "cae_usfpn", "cae_only", "sa_car_d8", "ocr_sfpn", "aspp_sfpn", "sa"])
def test_every_table_variant_trains(overrides, outputs):
  config = tiny_config(**overrides)
  model = build_model(config)
  images, labels = batch(33)
  with tf.GradientTape() as tape:
    result = model({"image": images, "label": labels}, training=True)
    total, terms = segmentation_losses(result, labels, config)
  assert set(result) == outputs
  has_car = config.encoder in ("cae", "sa_car")
  assert ("car_intra" in terms) == has_car
  assert np.isfinite(float(total))
  grads = tape.gradient(total, model.trainable_variables)
  assert sum(g is not None for g in grads) > 0


def test_cross_entropy_ignores_pixels_and_averages_as_configured():
  logits = tf.constant([[[[2.0, 0.0], [0.0, 2.0]]]])  # [1, 1, 2, 2]
  labels = tf.constant([[[0, 255]]])
  per_pixel = float(tf.nn.sparse_softmax_cross_entropy_with_logits([0], [[2.0, 0.0]])[0])
  np.testing.assert_allclose(float(cross_entropy(logits, labels)), per_pixel / 2, rtol=1e-6)
  np.testing.assert_allclose(float(cross_entropy(logits, labels, valid_only=True)), per_pixel,
                             rtol=1e-6)


def test_config_validation_names_the_field():
  with pytest.raises(ValueError, match="unknown decoder 'fpn'; choose one of sfpn, usfpn"):
    build_model(tiny_config(decoder="fpn"))
  with pytest.raises(ValueError, match="unknown encoder 'nl'; choose one of aspp, cae"):
    build_model(tiny_config(encoder="nl", hfgm=False))
  with pytest.raises(ValueError, match="hfgm=True"):
    ModelConfig(encoder="ocr").validate()
  with pytest.raises(ValueError, match="ignore_label=0"):
    ModelConfig(ignore_label=0).validate()
  with pytest.raises(ValueError, match="unknown model config fields: colour"):
    ModelConfig.from_dict({"colour": 1})


def test_model_config_round_trip_gives_the_same_model(model_of_stride):
  model = model_of_stride(2)
  clone = SegmentationModel.from_config(model.get_config())
  assert clone.config == model.config
  images, _ = batch(33)
  clone(images, training=False)
  clone.set_weights(model.get_weights())
  np.testing.assert_allclose(clone(images, training=False).numpy(),
                             model(images, training=False).numpy(), atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_logits_losses_and_statistics_in_float32(policy):
  keras.mixed_precision.set_global_policy(policy)
  model = build_model(tiny_config())
  images, labels = batch(33)
  outputs = model({"image": images, "label": labels}, training=True)
  assert outputs["logits"].dtype == tf.float32
  assert outputs["cae_logits"].dtype == tf.float32
  assert all(loss.dtype == tf.float32 for loss in outputs["losses"].values())
  assert model.decoder.end_conv.conv.compute_dtype == policy.split("_")[1]
  for variable in model.weights:
    assert variable.dtype == "float32", variable.path
  assert np.isfinite(float(tf.add_n(list(outputs["losses"].values()))))
