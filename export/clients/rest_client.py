"""TF Serving REST client for an fra_keras export (port 8501).

    python export/clients/rest_client.py face1.jpg face2.png --model-name fra
    python export/clients/rest_client.py face.png --signature serving_default --format inputs --dry-run

Default signature: serve_image_bytes (the files' bytes, base64 in {"b64": ...}; any sizes, smallest
body). serving_default sends decoded uint8 pixels (all images must share a size). serve_tf_example
wraps each file in a tf.Example under the feature key "image" (needs TensorFlow installed).
--dry-run prints the JSON body (long lists shortened) instead of sending it.
The body is built and validated by `build_request` (fra_keras.serving), which the tests call without
a server.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from fra_keras import serving

SIGNATURES = tuple(serving.SIGNATURE_INPUTS)


def build_request(image_paths, signature: str = "serve_image_bytes", fmt: str = "instances") -> dict:
    """The REST body for `image_paths` (checked against the contract: sizes, formats, limits)."""
    values = serving.signature_values(image_paths, signature)
    body = serving.build_rest_body(values, signature, fmt)
    # Validate exactly as the server-side contract does, so a bad file fails here with a clear message.
    serving.parse_rest_request(body, serving.export_signatures())
    return body


def predict_url(host: str, model_name: str, version=None) -> str:
    """http://HOST/v1/models/NAME[/versions/N]:predict (TF Serving's REST API)."""
    base = host if host.startswith(("http://", "https://")) else f"http://{host}"
    path = f"/v1/models/{model_name}" + (f"/versions/{int(version)}" if version is not None else "")
    return f"{base.rstrip('/')}{path}:predict"


def send(url: str, body: dict, timeout: float = 30.0) -> dict:
    """POST the body; the decoded JSON answer (raises RuntimeError with the server's error text)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            text = json.loads(text).get("error", text)
        except (ValueError, AttributeError):
            pass
        raise RuntimeError(f"HTTP {e.code} from {url}: {text}") from None


def outputs_from_response(response: dict) -> dict:
    """{"predictions": [...]} or {"outputs": ...} -> name -> list per image."""
    import numpy as np

    if "predictions" in response:
        rows = response["predictions"]
        if rows and isinstance(rows[0], dict):
            return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
        return {"output": np.asarray(rows)}
    outputs = response["outputs"]
    if isinstance(outputs, dict):
        return {k: np.asarray(v) for k, v in outputs.items()}
    return {"output": np.asarray(outputs)}


def _shorten(value, limit=6):
    if isinstance(value, list):
        items = [_shorten(v, limit) for v in value[:limit]]
        return items + ([f"... {len(value) - limit} more"] if len(value) > limit else [])
    if isinstance(value, dict):
        return {k: (v[:40] + "..." if isinstance(v, str) and len(v) > 40 else _shorten(v, limit))
                for k, v in value.items()}
    return value


def _reason(error) -> str:
    """'Connection refused' rather than '<urlopen error [Errno 111] Connection refused>'."""
    reason = getattr(error, "reason", error)
    return getattr(reason, "strerror", None) or str(reason)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="JPEG / PNG files")
    parser.add_argument("--model-name", default="fra")
    parser.add_argument("--host", default="localhost:8501")
    parser.add_argument("--version", type=int, default=None, help="a specific version (default: the latest)")
    parser.add_argument("--signature", default="serve_image_bytes", choices=SIGNATURES)
    parser.add_argument("--format", default="instances", choices=("instances", "inputs"),
                        help="row (instances) or columnar (inputs) body")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--dry-run", action="store_true", help="print the body, do not send it")
    args = parser.parse_args(argv)
    try:
        body = build_request(args.images, args.signature, args.format)
    except (serving.ServingError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    url = predict_url(args.host, args.model_name, args.version)
    if args.dry_run:
        print(json.dumps({"url": url, "body": _shorten(body)}, indent=1))
        return 0
    try:
        response = send(url, body, args.timeout)
    except urllib.error.URLError as e:   # no server there (HTTP errors became RuntimeError in send)
        print(f"error: {serving.unreachable_message('REST', url, _reason(e), args.model_name)}", file=sys.stderr)
        return 1
    except (ConnectionError, TimeoutError) as e:
        print(f"error: {serving.unreachable_message('REST', url, _reason(e), args.model_name)}", file=sys.stderr)
        return 1
    except (RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path, row in zip(args.images, serving.summarize_outputs(outputs_from_response(response))):
        print(json.dumps({"image": path, **row}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
