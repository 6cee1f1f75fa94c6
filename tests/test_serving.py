"""TF Serving's request path against the exported SavedModel, with tensorflow-serving-api's own
protos: a gRPC PredictRequest of encoded images of three sizes and a REST {"instances": [{"b64"}]}
body, converted as the model server converts them, run on the loaded signatures; the warm-up file
parses as PredictionLogs whose requests run. Skipped without requirements-export.txt."""

import base64
import json

import numpy as np
import pytest
import tensorflow as tf

from hfgd_tf import export
from hfgd_tf.config import ModelConfig
from hfgd_tf.modeling.model import build_model

predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")

NUM_CLASSES = 4
WARMUP_SIZE = (20, 24)


def _serve(loaded, request):
  """What the model server does with a PredictRequest: its TensorProtos as tensors into the
  signature it names, the outputs as TensorProtos of a PredictResponse (over the wire)."""
  request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
  signature = loaded.signatures[request.model_spec.signature_name or "serving_default"]
  outputs = signature(**{name: tf.constant(tf.make_ndarray(proto))
                         for name, proto in request.inputs.items()})
  response = predict_pb2.PredictResponse()
  response.model_spec.CopyFrom(request.model_spec)
  for name, value in outputs.items():
    response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
  return predict_pb2.PredictResponse.FromString(response.SerializeToString())


def _request(signature_name, inputs):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "hfgd"
  request.model_spec.signature_name = signature_name
  for name, value in inputs.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  return request


@pytest.mark.slow  # a SavedModel with four signatures: > 15 s on 2 cores
def test_predict_requests_and_warmup_run_against_the_exported_saved_model(tmp_path):
  model = build_model(ModelConfig(num_classes=NUM_CLASSES, backbone="resnet_test",
                                  encoder_filters=32, decoder_filters=16))
  path = export.export_saved_model(model, str(tmp_path / "hfgd" / "1"), inputs="both",
                                   warmup_size=WARMUP_SIZE)
  loaded = tf.saved_model.load(path)
  assert set(loaded.signatures) == {"serving_default", "probabilities", "image_bytes",
                                    "image_bytes_probabilities"}
  rng = np.random.RandomState(7)
  pixels = [rng.randint(0, 256, size).astype(np.uint8)
            for size in [(29, 37, 3), (20, 16, 3), (24, 30, 3)]]
  encoded = [tf.io.encode_png(pixels[0]).numpy(), tf.io.encode_jpeg(pixels[1]).numpy(),
             tf.io.encode_png(pixels[2]).numpy()]
  expected = [_serve(loaded, _request("probabilities", {
      "images": tf.io.decode_image(data, channels=3).numpy()[None]})) for data in encoded]
  expected = [{name: tf.make_ndarray(response.outputs[name])[0]
               for name in ("class_map", "probabilities")} for response in expected]
  # The comparisons below compare something: probabilities vary over pixels and images.
  assert expected[0]["probabilities"].std(axis=(0, 1)).min() > 1e-4
  assert not np.allclose(expected[0]["probabilities"][:20, :24],
                         expected[2]["probabilities"][:20, :24], atol=1e-3)

  # gRPC: one request, three sizes; each image's maps in its corner, -1 / 0 around it.
  response = _serve(loaded, _request("image_bytes_probabilities",
                                     {"image_bytes": np.array(encoded, object)}))
  outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
  assert set(outputs) == {"class_map", "probabilities", "height", "width"}
  assert outputs["class_map"].shape == (3, 29, 37)
  np.testing.assert_array_equal(outputs["height"], [29, 20, 24])
  np.testing.assert_array_equal(outputs["width"], [37, 16, 30])
  for index, image in enumerate(pixels):
    height, width = image.shape[:2]
    np.testing.assert_array_equal(outputs["class_map"][index, :height, :width],
                                  expected[index]["class_map"])
    np.testing.assert_allclose(outputs["probabilities"][index, :height, :width],
                               expected[index]["probabilities"], rtol=1e-5, atol=1e-6)
    assert (outputs["class_map"][index, height:] == export.PADDED_CLASS).all()
    assert (outputs["class_map"][index, :, width:] == export.PADDED_CLASS).all()

  # REST, row format: each instance is the signature's one input, {"b64": ...} its bytes; the
  # answer has one {"class_map", "height", "width"} per instance.
  body = json.loads(json.dumps({"signature_name": "image_bytes", "instances": [
      {"b64": base64.b64encode(data).decode()} for data in encoded]}))
  instances = np.array([base64.b64decode(instance["b64"]) for instance in body["instances"]],
                       object)
  response = _serve(loaded, _request(body["signature_name"], {"image_bytes": instances}))
  outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
  predictions = json.loads(json.dumps({"predictions": [
      {name: value[index].tolist() for name, value in outputs.items()}
      for index in range(len(instances))]}))["predictions"]
  for prediction, reference in zip(predictions, expected):
    class_map = np.array(prediction["class_map"])[:prediction["height"], :prediction["width"]]
    np.testing.assert_array_equal(class_map, reference["class_map"])

  # The warm-up file: one PredictionLog per serving signature, each request served.
  logs = [prediction_log_pb2.PredictionLog.FromString(record.numpy()) for record in
          tf.data.TFRecordDataset(str(tmp_path / "hfgd" / "1" / export.WARMUP_FILE))]
  requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request
              for log in logs}
  assert len(logs) == 2 and set(requests) == {"serving_default", "image_bytes"}
  assert set(requests["serving_default"].inputs) == {"images"}
  assert set(requests["image_bytes"].inputs) == {"image_bytes"}
  for request in requests.values():
    class_map = tf.make_ndarray(_serve(loaded, request).outputs["class_map"])
    assert class_map.shape == (1, *WARMUP_SIZE)
