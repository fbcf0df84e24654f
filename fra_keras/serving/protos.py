"""TF Serving gRPC protos: build and validate `PredictRequest`s, and build `tf.Example`s.

`tensorflow_serving.apis.predict_pb2.PredictRequest` is what the gRPC `Predict` call takes; parsing
ends in `validate_inputs` (fra_keras/serving/contract.py) with `strict=True`, as TF Serving requires
exact dtypes for protos. TensorFlow and the serving protos are imported inside the functions, so that
importing this module (and a REST client) does not load TensorFlow.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from fra_keras.serving.contract import (DEFAULT_LIMITS, DEFAULT_SIGNATURE, SIGNATURE_INPUTS, TF_EXAMPLE_IMAGE_KEY,
                                        InputSpec, Limits, ServingError, validate_inputs)


def build_tf_example(encoded_image: bytes) -> bytes:
    """A serialized tf.Example holding `encoded_image` under the feature key `image` (TFX convention)."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature[TF_EXAMPLE_IMAGE_KEY].bytes_list.value.append(bytes(encoded_image))
    return example.SerializeToString()


def build_predict_request(model_name: str, values, signature_name: str = DEFAULT_SIGNATURE,
                          version: Optional[int] = None, input_name: Optional[str] = None,
                          output_filter: Sequence[str] = ()):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for one of the export's signatures.

    `values` as in `build_rest_body`: a uint8 array for serving_default, a list of bytes otherwise.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    name = input_name or SIGNATURE_INPUTS.get(signature_name)
    if name is None:
        raise ValueError(f"signature_name={signature_name!r}: pass input_name=...")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    if isinstance(values, np.ndarray) and values.dtype != object:
        proto = tf.make_tensor_proto(values)
    else:
        values = [bytes(v) for v in values]
        proto = tf.make_tensor_proto(values, dtype=tf.string, shape=[len(values)])
    request.inputs[name].CopyFrom(proto)
    request.output_filter.extend(output_filter)
    return request


def parse_predict_request(request, signatures: Mapping[str, Mapping[str, InputSpec]], *,
                          limits: Limits = DEFAULT_LIMITS) -> Tuple[str, Dict[str, np.ndarray], list]:
    """Validate a PredictRequest proto: (signature_name, inputs as NumPy arrays, output_filter)."""
    import tensorflow as tf

    signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
    if signature not in signatures:
        raise ServingError(f"signature_name={signature!r} is not served; available: {sorted(signatures)}")
    arrays = {}
    for name, proto in request.inputs.items():
        try:
            arrays[name] = tf.make_ndarray(proto)
        except Exception as e:  # malformed TensorProto (content size vs shape, unknown dtype, ...)
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ServingError(f"input {name!r}: malformed TensorProto ({first})") from None
    return signature, validate_inputs(arrays, signatures[signature], strict=True, limits=limits), \
        list(request.output_filter)
