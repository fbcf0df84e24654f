"""Request handling for exported FRA models: validate, then call (TF Serving contract, onnxruntime).

Restored SavedModel signatures do not check input shapes, and a wrong-rank tensor can abort the whole
process (docs/stack.md, "Export and serving"). Everything that feeds an exported model -- the tests, the
clients in `export/clients/`, `fra_keras.export`'s verification -- goes through this package, which
checks each request against the signature's TensorSpec *before* calling and turns every problem into
a `ServingError` with a one-line message (HTTP 400 semantics), never a crash.

What it understands (the TF Serving contract, https://www.tensorflow.org/tfx/serving/api_rest):

* gRPC `tensorflow_serving.apis.predict_pb2.PredictRequest` protos (`parse_predict_request`,
  `Predictor.handle_grpc`, `build_predict_request`).
* REST JSON bodies: row format `{"instances": [...]}` and columnar `{"inputs": ...}`, optional
  `"signature_name"`, binary values as `{"b64": "..."}` (`parse_rest_request`, `Predictor.handle_rest`,
  `build_rest_body`).
* The three signatures written by `fra_keras.export`: `serving_default` (`images`, uint8
  (B, H, W, 3)), `serve_image_bytes` (`image_bytes`, encoded JPEG / PNG strings (B,)) and
  `serve_tf_example` (`examples`, serialized `tf.Example` protos (B,) with the encoded image under
  the feature key `image`).

=================  =========================================================================
module             concern
=================  =========================================================================
``contract``       signatures, `InputSpec`, `Limits`, `ServingError`, image headers, `validate_inputs`
``rest``           REST JSON bodies: parse, format the response, build (base64 for bytes)
``protos``         gRPC `PredictRequest` protos and `tf.Example`s: build, parse
``predictors``     `Predictor` (SavedModel) and `OnnxPredictor` (onnxruntime) behind the validation
``client_io``      what the clients share: image files, the "no server" hint, output summaries
=================  =========================================================================

Every public name of those modules is an attribute of this package. Only NumPy is imported at import;
TensorFlow / onnxruntime / the serving protos / Pillow are imported when a function needs them, so a
REST client can build bodies without loading TensorFlow.
"""

from fra_keras.serving.client_io import (read_bytes, read_image_file, serve_command, signature_values,
                                         stack_images, summarize_outputs, unreachable_message)
from fra_keras.serving.contract import (DEFAULT_LIMITS, DEFAULT_SIGNATURE, SIGNATURE_INPUTS, TF_EXAMPLE_IMAGE_KEY,
                                        InputSpec, Limits, ServingError, export_signatures,
                                        image_size_from_header, validate_inputs)
from fra_keras.serving.predictors import OnnxPredictor, Predictor
from fra_keras.serving.protos import build_predict_request, build_tf_example, parse_predict_request
from fra_keras.serving.rest import build_rest_body, format_rest_response, parse_rest_request

__all__ = [
    "DEFAULT_LIMITS", "DEFAULT_SIGNATURE", "InputSpec", "Limits", "OnnxPredictor", "Predictor", "SIGNATURE_INPUTS",
    "ServingError", "TF_EXAMPLE_IMAGE_KEY", "build_predict_request", "build_rest_body", "build_tf_example",
    "export_signatures", "format_rest_response", "image_size_from_header", "parse_predict_request",
    "parse_rest_request", "read_bytes", "read_image_file", "serve_command", "signature_values", "stack_images",
    "summarize_outputs",
    "unreachable_message", "validate_inputs",
]
