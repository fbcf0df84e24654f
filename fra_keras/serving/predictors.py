"""Server-side predictors: a SavedModel (`Predictor`) or model.onnx (`OnnxPredictor`) behind validation.

Each predictor reads its signatures' input specs from the model, validates every request with
`validate_inputs` (fra_keras/serving/contract.py) and answers REST bodies (`handle_rest`) and, for the
SavedModel, gRPC `PredictRequest`s (`handle_grpc`) like TF Serving. TensorFlow / onnxruntime are
imported when a predictor is built, not when this module is imported.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from fra_keras.serving.contract import (DEFAULT_LIMITS, DEFAULT_SIGNATURE, InputSpec, Limits, ServingError,
                                        _content_for, validate_inputs)
from fra_keras.serving.protos import parse_predict_request
from fra_keras.serving.rest import format_rest_response, parse_rest_request


def _filter_outputs(outputs: Dict[str, np.ndarray], output_filter: Sequence[str]) -> Dict[str, np.ndarray]:
    if not output_filter:
        return outputs
    unknown = sorted(set(output_filter) - set(outputs))
    if unknown:
        raise ServingError(f"output_filter {unknown} names unknown outputs; available: {sorted(outputs)}")
    return {k: outputs[k] for k in output_filter}


class _PredictorBase:
    signatures: Dict[str, Dict[str, InputSpec]]

    def __init__(self, limits: Limits = DEFAULT_LIMITS):
        self.limits = limits

    def _run(self, signature: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def predict(self, inputs: Mapping[str, Any], signature_name: str = DEFAULT_SIGNATURE, *,
                strict: bool = True) -> Dict[str, np.ndarray]:
        """Validate `inputs` against the signature, then run it; outputs as NumPy arrays."""
        if signature_name not in self.signatures:
            raise ServingError(f"signature_name={signature_name!r} is not served; available: "
                               f"{sorted(self.signatures)}")
        arrays = validate_inputs(inputs, self.signatures[signature_name], strict=strict, limits=self.limits)
        return self._run(signature_name, arrays)

    def handle_rest(self, body) -> Tuple[int, dict]:
        """(HTTP status, JSON-able response) for a REST predict body, like TF Serving's :predict."""
        try:
            signature, arrays, fmt = parse_rest_request(body, self.signatures, limits=self.limits)
            return 200, format_rest_response(self._run(signature, arrays), fmt)
        except ServingError as e:
            return e.status, {"error": str(e)}


class Predictor(_PredictorBase):
    """A loaded SavedModel export whose signatures are only ever called with validated inputs.

    Args:
      export_dir: a SavedModel folder (e.g. export/models/savedmodel/fra/3), or an object returned by
        `tf.saved_model.load`.
    """

    def __init__(self, export_dir, limits: Limits = DEFAULT_LIMITS):
        super().__init__(limits)
        import tensorflow as tf

        self.loaded = tf.saved_model.load(export_dir) if isinstance(export_dir, str) else export_dir
        self.signatures = {}
        for sig_name, fn in self.loaded.signatures.items():
            _, kwargs = fn.structured_input_signature
            self.signatures[sig_name] = {n: InputSpec.from_tensor_spec(n, s) for n, s in kwargs.items()}

    def _run(self, signature, inputs):
        import tensorflow as tf

        fn = self.loaded.signatures[signature]
        try:
            out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        except (tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError) as e:
            raise ServingError(f"{signature}: {_first_line(e.message)}") from None
        return {k: v.numpy() for k, v in out.items()}

    def handle_grpc(self, request):
        """Answer a PredictRequest with a PredictResponse; `ServingError` for a bad request."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        signature, arrays, output_filter = parse_predict_request(request, self.signatures, limits=self.limits)
        outputs = _filter_outputs(self._run(signature, arrays), output_filter)
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


class OnnxPredictor(_PredictorBase):
    """An exported model.onnx in onnxruntime, behind the same validation (signature `serving_default`)."""

    def __init__(self, model_path: str, limits: Limits = DEFAULT_LIMITS, providers=("CPUExecutionProvider",)):
        super().__init__(limits)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model_path, options, providers=list(providers))
        specs = {}
        for i in self.session.get_inputs():
            dtype = i.type[len("tensor("):-1]
            dtype = "string" if dtype == "string" else dtype
            shape = tuple(d if isinstance(d, int) else None for d in i.shape)
            specs[i.name] = InputSpec(i.name, dtype, shape, _content_for(i.name, dtype))
        self.signatures = {DEFAULT_SIGNATURE: specs}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _run(self, signature, inputs):
        try:
            values = self.session.run(self.output_names, dict(inputs))
        except Exception as e:  # onnxruntime raises its own exception types for bad feeds
            raise ServingError(f"onnxruntime: {_first_line(str(e))}") from None
        return dict(zip(self.output_names, values))


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else "error"
