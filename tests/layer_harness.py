"""One check every custom layer goes through (in the spirit of keras-hub's layer tests):

  1. config round trip: from_config(get_config()) gives the same config and, with the same
     weights, the same outputs;
  2. mixed precision: built under mixed_bfloat16 its variables stay float32, its outputs are finite
     and close to the float32 layer's with the same weights;
  3. SavedModel: saved inside a tf.Module (so every sub-layer's variables must be tracked) and
     loaded back in a function with dynamic spatial sizes, it gives the same outputs;
  4. initial weights: built inside a functional model (a symbolic call, which Keras 3 may run
     under a StatelessScope that discards any assign done in a build()), and so again after
     from_config (as a saved model's config is rebuilt), every weight is what its initializer
     gives (Keras 3 initializers are seeded, so calling one again reproduces its sample) and what
     the layer means it to be (`initial_weights`, e.g. q == k).

A case is `make_layer(**kwargs)` (kwargs go to the constructor, e.g. dtype), example `inputs` (a
nested structure of tensors) and `call(layer, inputs, companions)`; `companions` are other layers
the call needs (e.g. the classifier HFGM reads), built once and saved alongside.
"""

import dataclasses
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class LayerCase:
  make_layer: Callable
  inputs: object
  call: Callable = lambda layer, inputs, companions: layer(inputs)
  make_companions: Optional[Callable[[], Dict[str, keras.layers.Layer]]] = None
  # Relative tolerance of bfloat16 against float32 outputs (bfloat16 keeps 8 mantissa bits).
  bfloat16_tolerance: float = 0.05
  # initial_weights(layer) asserts what the built layer's weights must be beyond each one being
  # its initializer's sample: values set by add_weight (no initializer attribute), equal kernels.
  initial_weights: Optional[Callable] = None


def _numpy(outputs):
  return [np.asarray(tf.cast(value, tf.float32)) for value in tf.nest.flatten(outputs)]


def _assert_close(actual, expected, rtol, atol_scale, what):
  for got, want in zip(_numpy(actual), _numpy(expected)):
    scale = max(float(np.max(np.abs(want))), 1.0) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol_scale * scale, err_msg=what)


def _run(case, layer, companions):
  return case.call(layer, case.inputs, companions)


def check_config_round_trip(case):
  companions = case.make_companions() if case.make_companions else {}
  layer = case.make_layer()
  expected = _run(case, layer, companions)
  config = layer.get_config()
  rebuilt = type(layer).from_config(config)
  assert rebuilt.get_config() == config, type(layer).__name__
  _run(case, rebuilt, companions)  # builds its weights
  rebuilt.set_weights(layer.get_weights())
  _assert_close(_run(case, rebuilt, companions), expected, 1e-5, 1e-5, "rebuilt from config")


def check_mixed_precision(case):
  companions = case.make_companions() if case.make_companions else {}
  reference = case.make_layer()
  expected = _run(case, reference, companions)
  layer = case.make_layer(dtype="mixed_bfloat16")
  outputs = _run(case, layer, companions)
  layer.set_weights(reference.get_weights())
  outputs = _run(case, layer, companions)
  for variable in layer.weights:
    assert variable.dtype == "float32", variable.path
  for value in _numpy(outputs):
    assert np.isfinite(value).all(), type(layer).__name__
  _assert_close(outputs, expected, case.bfloat16_tolerance, case.bfloat16_tolerance,
                "bfloat16 vs float32")


def _dynamic_spec(tensor):
  tensor = tf.convert_to_tensor(tensor)
  shape = list(tensor.shape)
  if len(shape) == 4:  # NHWC: any height and width
    shape[1] = shape[2] = None
  return tf.TensorSpec(shape, tensor.dtype)


def check_saved_model(case, directory):
  companions = case.make_companions() if case.make_companions else {}
  layer = case.make_layer()
  expected = _run(case, layer, companions)
  module = tf.Module()
  module.layer = layer
  module.companions = companions
  signature = tf.nest.map_structure(_dynamic_spec, case.inputs)
  module.serve = tf.function(lambda inputs: case.call(layer, inputs, companions),
                             input_signature=[signature])
  tf.saved_model.save(module, str(directory))
  loaded = tf.saved_model.load(str(directory))
  _assert_close(loaded.serve(case.inputs), expected, 1e-5, 1e-5, "SavedModel")


def _functional_model(case, layer, companions):
  """Builds `layer` by calling it on symbolic inputs shaped like the case's, into a Model."""
  def symbolic(tensor, name):
    tensor = tf.convert_to_tensor(tensor)
    return keras.Input(shape=tensor.shape[1:], batch_size=tensor.shape[0], dtype=tensor.dtype,
                       name=name)
  inputs = ({name: symbolic(tensor, name) for name, tensor in case.inputs.items()}
            if isinstance(case.inputs, dict) else symbolic(case.inputs, "inputs"))
  return keras.Model(inputs, case.call(layer, inputs, companions))


def _assert_weights_are_their_initializers(layer):
  """Each `<name>` weight of every sub-layer that has a `<name>_initializer` equals a fresh call of
  that initializer (seeded in Keras 3, or constant: it gives the same values again); returns the
  ids of the weights checked."""
  checked = set()
  for sublayer in layer._flatten_layers():  # pylint: disable=protected-access
    for attribute, initializer in vars(sublayer).items():
      weight = getattr(sublayer, attribute[:-len("_initializer")], None)
      if not (attribute.endswith("_initializer") and isinstance(
          initializer, keras.initializers.Initializer) and isinstance(weight, keras.Variable)):
        continue
      expected = keras.ops.convert_to_numpy(initializer(weight.shape, dtype=weight.dtype))
      np.testing.assert_array_equal(weight.numpy(), expected, err_msg=weight.path)
      checked.add(id(weight))
  return checked


def check_initial_weights(case):
  companions = case.make_companions() if case.make_companions else {}
  layer = case.make_layer()
  _functional_model(case, layer, companions)
  rebuilt = type(layer).from_config(layer.get_config())
  _functional_model(case, rebuilt, companions)
  for how, built in (("in a functional model", layer), ("after from_config", rebuilt)):
    checked = _assert_weights_are_their_initializers(built)
    if case.initial_weights is not None:
      checked.update(id(weight) for weight in case.initial_weights(built))
    unchecked = [weight.path for weight in built.weights if id(weight) not in checked]
    assert not unchecked, f"{type(layer).__name__} built {how}: nothing checks {unchecked}"
