"""The serving contract: real PredictRequest protos and TF Serving REST bodies (row / columnar / b64)
through the exported SavedModel's signatures (fra_keras.serving), compared with the Keras model;
malformed requests get a clear error and the process keeps serving; the REST / gRPC clients build
their requests offline and talk to in-process stand-ins of TF Serving (no TF Serving binary here).

Uses the export shared with tests/test_export.py (the session fixture `tiny_export` of tests/conftest.py).
"""

import base64
import http.server
import io
import json
import os
import threading

import numpy as np
import pytest
from harness import export_reference, load_client

ATOL, RTOL = 1e-4, 1e-5
NAMES = ["embedding", "feature_map", "heatmaps", "expression_logits"]


# Fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared(tiny_export):
    return tiny_export


@pytest.fixture(scope="module")
def predictor(shared):
    from fra_keras.serving import Predictor

    return Predictor(shared["sm"])


@pytest.fixture(scope="module")
def reference(tiny_export_models):
    """uint8 images -> Keras outputs (independent of fra_keras.export)."""
    model, head = tiny_export_models
    return lambda images: export_reference(model, head, images)


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(5).randint(0, 256, (2, 64, 64, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def pngs(images):
    from PIL import Image

    out = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def assert_close(actual, expected, names=NAMES, label=""):
    for name in names:
        a, e = np.asarray(actual[name], np.float32), np.asarray(expected[name])
        assert a.shape == e.shape, (label, name, a.shape, e.shape)
        diff = float(np.max(np.abs(a - e)))
        limit = ATOL + RTOL * float(np.max(np.abs(e)))
        assert diff <= limit, f"{label} {name}: max abs diff {diff:.3g} > {limit:.3g}"


def rest_outputs(response, fmt):
    if fmt == "instances":
        rows = response["predictions"]
        return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
    return {k: np.asarray(v) for k, v in response["outputs"].items()}


# Good requests ------------------------------------------------------------------------------
def test_predict_request_protos_match_keras(predictor, reference, images, pngs):
    import tensorflow as tf

    from fra_keras import serving

    ref = reference(images)
    requests = [serving.build_predict_request("fra", images, "serving_default", version=1),
                serving.build_predict_request("fra", pngs, "serve_image_bytes"),
                serving.build_predict_request("fra", [serving.build_tf_example(p) for p in pngs],
                                              "serve_tf_example")]
    for request in requests:
        # Real protos on the wire: serialize and parse, as a gRPC server would.
        wire = type(request).FromString(request.SerializeToString())
        response = predictor.handle_grpc(wire)
        assert response.model_spec.signature_name == request.model_spec.signature_name
        outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        assert sorted(outputs) == sorted(NAMES)
        assert all(v.dtype == np.float32 for v in outputs.values())
        assert_close(outputs, ref, label=request.model_spec.signature_name)
    filtered = serving.build_predict_request("fra", images, output_filter=["embedding"])
    assert list(predictor.handle_grpc(filtered).outputs) == ["embedding"]


@pytest.mark.parametrize("fmt", ["instances", "inputs"])
@pytest.mark.parametrize("signature", ["serving_default", "serve_image_bytes", "serve_tf_example"])
def test_rest_bodies_match_keras(predictor, reference, images, pngs, fmt, signature):
    from fra_keras import serving

    values = {"serving_default": images, "serve_image_bytes": pngs,
              "serve_tf_example": [serving.build_tf_example(p) for p in pngs]}[signature]
    body = json.dumps(serving.build_rest_body(values, signature, fmt))
    status, response = predictor.handle_rest(body)
    assert status == 200, response
    assert_close(rest_outputs(response, fmt), reference(images), label=f"{signature} {fmt}")


def test_hand_written_rest_bodies(predictor, reference, images, pngs):
    b64 = [base64.b64encode(p).decode() for p in pngs]
    ref = reference(images)
    bodies = [
        # Row format, single input: instances are the values themselves.
        ('{"instances": %s}' % json.dumps(images.tolist()), "instances"),
        ('{"signature_name": "serve_image_bytes", "instances": [{"b64": "%s"}, {"b64": "%s"}]}' % tuple(b64),
         "instances"),
        # Columnar with the input named.
        ('{"signature_name": "serve_image_bytes", "inputs": {"image_bytes": [{"b64": "%s"}, {"b64": "%s"}]}}'
         % tuple(b64), "inputs"),
    ]
    for body, fmt in bodies:
        status, response = predictor.handle_rest(body.encode())
        assert status == 200, response
        assert_close(rest_outputs(response, fmt), ref, label=body[:40])


# Malformed requests -------------------------------------------------------------------------
def _png_header(width, height):
    return b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") \
        + b"\x08\x02\x00\x00\x00"


def _b64(data):
    return base64.b64encode(data).decode()


REST_BAD = [
    ("not json", "{instances: [1, 2", "malformed JSON"),
    ("not an object", "[1, 2, 3]", "must be an object"),
    ("neither key", '{"signature_name": "serving_default"}', "exactly one of"),
    ("both keys", '{"instances": [], "inputs": []}', "exactly one of"),
    ("unknown key", '{"instances": [1], "extra": 1}', "unknown keys"),
    ("empty instances", '{"instances": []}', "non-empty"),
    ("unknown signature", '{"signature_name": "predict", "instances": [1]}', "not served"),
    ("wrong rank", '{"instances": [[1, 2, 3], [4, 5, 6]]}', "rank 2"),
    ("wrong channels", '{"inputs": [[[[1, 2, 3, 4]]]]}', "dimension 3 is 4"),
    ("float pixels", '{"inputs": [[[[0.5, 1, 2]]]]}', "non-integer"),
    ("out of range", '{"inputs": [[[[300, 1, 2]]]]}', "outside the uint8 range"),
    ("strings for pixels", '{"inputs": [[[["a", "b", "c"]]]]}', "uint8 numbers expected"),
    ("ragged instances", '{"instances": [[[[1, 2, 3]]], [[[1, 2, 3], [4, 5, 6]]]]}', "ragged"),
    ("b64 for pixels", '{"inputs": [{"b64": "AAAA"}]}', "only allowed for string inputs"),
    ("bad base64", '{"signature_name": "serve_image_bytes", "instances": [{"b64": "@@not base64@@"}]}',
     "invalid base64"),
    ("plain string bytes", '{"signature_name": "serve_image_bytes", "instances": ["abc"]}', '{"b64"'),
    ("non-image bytes", '{"signature_name": "serve_image_bytes", "instances": [{"b64": "%s"}]}'
     % _b64(b"hello, this is text"), "not a JPEG or PNG"),
    ("huge image", '{"signature_name": "serve_image_bytes", "instances": [{"b64": "%s"}]}'
     % _b64(_png_header(100000, 64)), "largest side"),
    ("truncated png", '{"signature_name": "serve_image_bytes", "instances": [{"b64": "%s"}]}'
     % _b64(_png_header(64, 64)), "serve_image_bytes"),
    ("jpeg without frame", '{"signature_name": "serve_image_bytes", "instances": [{"b64": "%s"}]}'
     % _b64(b"\xff\xd8\xff\xe0\x00\x04ab\xff\xda\x00\x02"), "not a decodable JPEG"),
    ("example garbage", '{"signature_name": "serve_tf_example", "instances": [{"b64": "%s"}]}'
     % _b64(b"\xff\xff\xff\xff"), "tf.Example"),
]


@pytest.mark.parametrize("label, body, message", REST_BAD, ids=[c[0] for c in REST_BAD])
def test_malformed_rest_requests_get_400(predictor, label, body, message):
    status, response = predictor.handle_rest(body)
    assert status == 400, (label, response)
    assert message in response["error"], response["error"]
    assert "\n" not in response["error"]


def test_malformed_requests_limits_and_examples(predictor, pngs):
    from fra_keras import serving

    too_many = np.zeros((65, 2, 2, 3), np.uint8)
    with pytest.raises(serving.ServingError, match="exceeds the limit of 64"):
        predictor.predict({"images": too_many})
    with pytest.raises(serving.ServingError, match="batch is empty"):
        predictor.predict({"images": np.zeros((0, 8, 8, 3), np.uint8)})
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature["img"].bytes_list.value.append(pngs[0])
    with pytest.raises(serving.ServingError, match="no feature 'image'"):
        predictor.predict({"examples": np.array([example.SerializeToString()], object)}, "serve_tf_example")


def test_malformed_grpc_requests_and_process_survives(predictor, reference, images, pngs):
    import tensorflow as tf

    from fra_keras import serving

    def request_with(name, proto, signature="serving_default"):
        from tensorflow_serving.apis import predict_pb2

        r = predict_pb2.PredictRequest()
        r.model_spec.name, r.model_spec.signature_name = "fra", signature
        r.inputs[name].CopyFrom(proto)
        return r

    bad_content = tf.make_tensor_proto(images)
    bad_content.tensor_content = bad_content.tensor_content[:-5]
    cases = [
        (request_with("images", tf.make_tensor_proto(images.astype(np.float32))), "dtype float32 given, uint8"),
        (request_with("images", tf.make_tensor_proto(images[0])), "rank 3"),
        (request_with("images", tf.make_tensor_proto(images[:, :, :, :2].copy())), "dimension 3 is 2"),
        (request_with("pixels", tf.make_tensor_proto(images)), "do not match the signature"),
        (request_with("images", bad_content), "malformed TensorProto"),
        (request_with("image_bytes", tf.make_tensor_proto([b"GIF89a..."], tf.string), "serve_image_bytes"),
         "not a JPEG or PNG"),
        (request_with("image_bytes", tf.make_tensor_proto([[pngs[0]]], tf.string), "serve_image_bytes"), "rank 2"),
        (serving.build_predict_request("fra", images, output_filter=["logits"]), "output_filter"),
        (serving.build_predict_request("fra", images, "no_such_signature", input_name="images"), "not served"),
    ]
    for request, message in cases:
        with pytest.raises(serving.ServingError, match=message):
            predictor.handle_grpc(request)
    # Still serving, and still right.
    response = predictor.handle_grpc(serving.build_predict_request("fra", images))
    assert_close({k: tf.make_ndarray(v) for k, v in response.outputs.items()}, reference(images))


def test_onnx_predictor_validates_before_running(shared, reference, images):
    from fra_keras import serving

    onnx = serving.OnnxPredictor(os.path.join(shared["onnx"], "model.onnx"))
    assert onnx.signatures["serving_default"]["images"].shape == (None, None, None, 3)
    assert_close(onnx.predict({"images": images}), reference(images), label="onnxruntime")
    for bad, message in ((images[0], "rank 3"), (images.astype(np.int32), "dtype int32"),
                         (np.zeros((1, 9000, 8, 3), np.uint8), "largest side")):
        with pytest.raises(serving.ServingError, match=message):
            onnx.predict({"images": bad})


# Clients --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def png_files(pngs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("faces")
    paths = []
    for i, data in enumerate(pngs):
        paths.append(str(folder / f"face{i}.png"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    text = folder / "notes.txt"
    text.write_text("not an image")
    return paths, str(text)


def test_signature_values_per_signature(png_files, images):
    """The clients' one reader of image files: decoded batch, raw bytes, or tf.Examples holding the bytes."""
    import tensorflow as tf

    from fra_keras import serving

    paths, _ = png_files
    batch = serving.signature_values(paths, "serving_default")
    np.testing.assert_array_equal(batch, np.asarray(images, dtype=np.uint8))
    raw = serving.signature_values(paths, "serve_image_bytes")
    assert raw == [open(p, "rb").read() for p in paths]
    examples = serving.signature_values(paths, "serve_tf_example")
    for data, example in zip(raw, examples):
        parsed = tf.train.Example.FromString(example)
        assert parsed.features.feature[serving.TF_EXAMPLE_IMAGE_KEY].bytes_list.value[0] == data
    with pytest.raises(serving.ServingError, match=r"--signature 'serve_png': choose one of \['serving_default'"):
        serving.signature_values(paths, "serve_png")


def test_rest_client_builds_bodies_offline(predictor, reference, images, png_files, capsys):
    client = load_client("rest_client")
    paths, text = png_files
    ref = reference(images)
    for signature in ("serve_image_bytes", "serving_default", "serve_tf_example"):
        for fmt in ("instances", "inputs"):
            body = client.build_request(paths, signature, fmt)
            status, response = predictor.handle_rest(json.dumps(body))
            assert status == 200, response
            assert_close(client.outputs_from_response(response), ref, label=f"rest client {signature} {fmt}")
    assert client.predict_url("localhost:8501", "fra", 3) == "http://localhost:8501/v1/models/fra/versions/3:predict"
    assert client.main([*paths, "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["url"].endswith("/v1/models/fra:predict") and "instances" in printed["body"]
    assert client.main([text, "--dry-run"]) == 2
    assert "error:" in capsys.readouterr().err


def test_grpc_client_builds_requests_offline(predictor, reference, images, png_files, capsys):
    client = load_client("grpc_client")
    paths, text = png_files
    ref = reference(images)
    for signature in ("serve_image_bytes", "serving_default", "serve_tf_example"):
        response = predictor.handle_grpc(client.build_request(paths, "fra", signature, version=1))
        assert_close(client.outputs_from_response(response), ref, label=f"grpc client {signature}")
    assert client.main([*paths, "--dry-run", "--signature", "serving_default"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["inputs"]["images"] == {"dtype": "uint8", "shape": [2, 64, 64, 3],
                                           "bytes": printed["inputs"]["images"]["bytes"]}
    assert client.main([text, "--dry-run"]) == 2


def test_clients_against_in_process_servers(predictor, reference, images, png_files, capsys):
    """Stand-ins for TF Serving (no binary here): the REST and gRPC front ends call the same contract."""
    import grpc
    from concurrent import futures
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from fra_keras import serving

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if not self.path.startswith("/v1/models/fra") or not self.path.endswith(":predict"):
                status, answer = 404, {"error": f"no such model path {self.path}"}
            else:
                status, answer = predictor.handle_rest(body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802
            try:
                return predictor.handle_grpc(request)
            except serving.ServingError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    http_server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        paths, _ = png_files
        ref = reference(images)
        rest = load_client("rest_client")
        url = rest.predict_url(f"127.0.0.1:{http_server.server_port}", "fra")
        response = rest.send(url, rest.build_request(paths))
        assert_close(rest.outputs_from_response(response), ref, label="REST over HTTP")
        with pytest.raises(RuntimeError, match="HTTP 400.*must be an object"):
            rest.send(url, "{broken")  # a JSON string body, i.e. not an object after decoding twice
        assert rest.main([*paths, "--host", f"127.0.0.1:{http_server.server_port}"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(rows) == 2 and len(rows[0]["region_share"]) == 8

        g = load_client("grpc_client")
        host = f"127.0.0.1:{grpc_port}"
        response = g.send(g.build_request(paths, "fra", "serving_default"), host)
        assert_close(g.outputs_from_response(response), ref, label="gRPC")
        bad = serving.build_predict_request("fra", images[0:1, :, :, :2].copy())
        with pytest.raises(grpc.RpcError) as err:
            g.send(bad, host)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "dimension 3" in err.value.details()
        assert g.main([paths[0], "--host", host]) == 0
        assert "expression_logits" in capsys.readouterr().out
    finally:
        http_server.shutdown()
        http_server.server_close()
        grpc_server.stop(None)
