"""TF Serving warm-up requests: `assets.extra/tf_serving_warmup_requests`, a TFRecord of PredictionLog
protos that TF Serving replays at load time (https://www.tensorflow.org/tfx/serving/saved_model_warmup)."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import tensorflow as tf

from fra_keras.config import FRAConfig
from fra_keras.exporter.layout import SIGNATURES, WARMUP, ExportError
from fra_keras.serving import build_predict_request, build_tf_example


def _ld(number: int, payload: bytes) -> bytes:
    """A protobuf length-delimited field (wire type 2): key varint, length varint, payload."""
    out = bytearray()
    for value in ((number << 3) | 2, len(payload)):
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
    return bytes(out) + payload


def prediction_log_bytes(model_name: str, signature: str, input_name: str, tensor_proto) -> bytes:
    """A serialized tensorflow.serving.PredictionLog {predict_log {request}} encoded by hand (field
    numbers of tensorflow_serving/apis/{prediction_log,predict,model}.proto), so that warm-up records
    can be written without tensorflow-serving-api (a test extra). A test checks it byte for byte
    against the real protos."""
    spec = _ld(1, model_name.encode()) + _ld(3, signature.encode())          # ModelSpec.name, .signature_name
    entry = _ld(1, input_name.encode()) + _ld(2, tensor_proto.SerializeToString())  # map<string, TensorProto>
    request = _ld(1, spec) + _ld(2, entry)                                    # PredictRequest.model_spec, .inputs
    return _ld(6, _ld(1, request))                                            # PredictionLog.predict_log.request


def warmup_requests(config: FRAConfig, model_name: str):
    """(signature, input name, value) of the warm-up requests: one image through each signature."""
    s = int(config.image_size)
    yy, xx = np.mgrid[0:s, 0:s]
    image = np.stack([xx * 255 // max(1, s - 1), yy * 255 // max(1, s - 1), np.full_like(xx, 128)], -1)
    image = image.astype(np.uint8)[np.newaxis]
    png = tf.io.encode_png(image[0]).numpy()
    return [("serving_default", "images", image), ("serve_image_bytes", "image_bytes", [png]),
            ("serve_tf_example", "examples", [build_tf_example(png)])]


def _serving_protos():
    """tensorflow_serving.apis.prediction_log_pb2, or None: tensorflow-serving-api is an optional extra."""
    try:
        from tensorflow_serving.apis import prediction_log_pb2
    except ImportError:
        return None
    return prediction_log_pb2


def write_warmup(folder: str, config: FRAConfig, model_name: str,
                 signatures: Mapping[str, str] = SIGNATURES) -> int:
    """Write the warm-up file into the SavedModel `folder`: one request per signature of `signatures`
    (signature -> input name: "images", "image_bytes" or "examples"; default the export's three), with
    the values of `warmup_requests`. Returns the number of requests."""
    by_input = {name: value for _, name, value in warmup_requests(config, model_name)}
    unknown = sorted(set(signatures.values()) - set(by_input))
    if unknown:
        raise ExportError(f"signatures={dict(signatures)!r}: no warm-up value for input {unknown[0]!r}; "
                          f"inputs are {sorted(by_input)}")
    records = [(sig, name, by_input[name]) for sig, name in signatures.items()]
    path = os.path.join(folder, WARMUP)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    prediction_log_pb2 = _serving_protos()
    with tf.io.TFRecordWriter(path) as writer:
        for signature, input_name, value in records:
            if prediction_log_pb2 is not None:
                request = build_predict_request(model_name, value, signature, input_name=input_name)
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
            else:   # the client protos are a test extra; encode the wrapper messages by hand
                if isinstance(value, list):
                    proto = tf.make_tensor_proto([bytes(v) for v in value], dtype=tf.string, shape=[len(value)])
                else:
                    proto = tf.make_tensor_proto(value)
                writer.write(prediction_log_bytes(model_name, signature, input_name, proto))
    return len(records)


def read_warmup(folder: str) -> list:
    """The PredictRequests in a SavedModel's warm-up file (needs tensorflow-serving-api: ImportError)."""
    from tensorflow_serving.apis import prediction_log_pb2   # optional extra; the ImportError is the answer

    requests = []
    for record in tf.data.TFRecordDataset(os.path.join(folder, WARMUP)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        requests.append(log.predict_log.request)
    return requests
