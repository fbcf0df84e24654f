"""TF Serving gRPC client for an fra_keras export (port 8500).

    python export/clients/grpc_client.py face1.jpg face2.png --model-name fra
    python export/clients/grpc_client.py face.png --signature serving_default --dry-run

Builds a `tensorflow_serving.apis.predict_pb2.PredictRequest` (`build_request`, which the tests call
without a server), validated against the export's contract before it is sent. Default signature:
serve_image_bytes (the files' bytes). --dry-run prints what would be sent.
Needs tensorflow-serving-api (and so TensorFlow) and grpcio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# TensorFlow (imported by tensorflow-serving-api) and gRPC log from C++ at import: keep them quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from fra_keras import cli_utils, serving  # noqa: E402

SIGNATURES = tuple(serving.SIGNATURE_INPUTS)


def build_request(image_paths, model_name: str = "fra", signature: str = "serve_image_bytes",
                  version=None, output_filter=()):
    """The PredictRequest for `image_paths` (checked against the contract: sizes, formats, limits)."""
    values = serving.signature_values(image_paths, signature)
    request = serving.build_predict_request(model_name, values, signature, version, output_filter=output_filter)
    serving.parse_predict_request(request, serving.export_signatures())
    return request


def send(request, host: str = "localhost:8500", timeout: float = 30.0):
    """Call PredictionService/Predict; the PredictResponse."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(host) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(request, timeout=timeout)


def outputs_from_response(response) -> dict:
    import tensorflow as tf

    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def describe(request) -> dict:
    import tensorflow as tf

    inputs = {}
    for name, proto in request.inputs.items():
        value = tf.make_ndarray(proto)
        inputs[name] = {"dtype": str(value.dtype) if value.dtype != object else "string",
                        "shape": list(value.shape), "bytes": proto.ByteSize()}
    spec = request.model_spec
    return {"model": spec.name, "signature": spec.signature_name,
            "version": spec.version.value if spec.HasField("version") else None, "inputs": inputs,
            "request_bytes": request.ByteSize()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="JPEG / PNG files")
    parser.add_argument("--model-name", default="fra")
    parser.add_argument("--host", default="localhost:8500")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--signature", default="serve_image_bytes", choices=SIGNATURES)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--dry-run", action="store_true", help="print the request summary, do not send it")
    args = parser.parse_args(argv)
    missing = [p for p in args.images if not os.path.isfile(p)]
    if missing:   # before TensorFlow loads
        print(f"error: image {missing[0]!r} does not exist (write samples with: python -m fra_keras.data.samples "
              "--output samples/)", file=sys.stderr)
        return 2
    cli_utils.quiet_tensorflow()
    try:
        request = build_request(args.images, args.model_name, args.signature, args.version)
    except (serving.ServingError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps({"host": args.host, **describe(request)}, indent=1))
        return 0
    try:
        response = send(request, args.host, args.timeout)
    except Exception as e:  # grpc.RpcError and connection problems
        details = e.details() if hasattr(e, "details") else str(e)
        code = e.code() if hasattr(e, "code") else None
        if getattr(code, "name", "") in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            print(f"error: {serving.unreachable_message('gRPC', args.host, _first_line(details), args.model_name)}",
                  file=sys.stderr)
        else:
            print(f"error: gRPC call to {args.host} failed: {_first_line(details)}", file=sys.stderr)
        return 1
    for path, row in zip(args.images, serving.summarize_outputs(outputs_from_response(response))):
        print(json.dumps({"image": path, **row}))
    return 0


def _first_line(text) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else "no details"


if __name__ == "__main__":
    sys.exit(main())
