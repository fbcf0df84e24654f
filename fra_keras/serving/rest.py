"""TF Serving REST bodies (https://www.tensorflow.org/tfx/serving/api_rest): parse, answer, build.

Row format `{"instances": [...]}` and columnar `{"inputs": ...}`, optional `"signature_name"`, binary
values as `{"b64": "..."}`. Parsing ends in `validate_inputs` (fra_keras/serving/contract.py) with
`strict=False`: JSON numbers are converted to the signature's dtype with a range check. NumPy only.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from fra_keras.serving.contract import (DEFAULT_LIMITS, DEFAULT_SIGNATURE, SIGNATURE_INPUTS, InputSpec, Limits,
                                        ServingError, validate_inputs)


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _decode_b64_tree(value, where: str):
    """Nested lists of {"b64": str} -> nested lists of bytes."""
    if isinstance(value, list):
        return [_decode_b64_tree(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if _is_b64(value):
        text = value["b64"]
        if not isinstance(text, str):
            raise ServingError(f"{where}: 'b64' must hold a base64 string, got {type(text).__name__}")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ServingError(f"{where}: invalid base64 ({e})") from None
    if isinstance(value, str):
        raise ServingError(f'{where}: binary inputs must be sent as {{"b64": "<base64>"}}, not as a plain string')
    raise ServingError(f'{where}: expected {{"b64": "<base64>"}}, got {type(value).__name__}')


def _check_no_b64(value, where: str):
    if isinstance(value, dict):
        raise ServingError(f"{where}: objects (such as {{\"b64\": ...}}) are only allowed for string inputs")
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_no_b64(v, f"{where}[{i}]")


def parse_rest_request(body, signatures: Mapping[str, Mapping[str, InputSpec]], *,
                       limits: Limits = DEFAULT_LIMITS) -> Tuple[str, Dict[str, np.ndarray], str]:
    """Parse and validate a TF Serving REST predict body.

    Args:
      body: the JSON text / bytes, or an already decoded dict.
      signatures: signature name -> {input name -> InputSpec}.
    Returns: (signature_name, inputs as NumPy arrays, "row" | "columnar").
    """
    if isinstance(body, (bytes, bytearray, str)):
        try:
            body = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ServingError(f"malformed JSON body: {e}") from None
    if not isinstance(body, dict):
        raise ServingError(f"the JSON body must be an object, got {type(body).__name__}")
    unknown = sorted(set(body) - {"signature_name", "instances", "inputs"})
    if unknown:
        raise ServingError(f"unknown keys {unknown} in the body; allowed: signature_name, instances, inputs")
    signature = body.get("signature_name", DEFAULT_SIGNATURE)
    if signature not in signatures:
        raise ServingError(f"signature_name={signature!r} is not served; available: {sorted(signatures)}")
    specs = signatures[signature]
    if ("instances" in body) == ("inputs" in body):
        raise ServingError("the body needs exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    names = list(specs)
    if "instances" in body:
        fmt = "row"
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise ServingError("'instances' must be a non-empty list (one entry per example)")
        columns = {n: [] for n in names}
        for i, inst in enumerate(instances):
            if isinstance(inst, dict) and not _is_b64(inst):
                if set(inst) != set(names):
                    raise ServingError(f"instances[{i}] has keys {sorted(inst)}; expected {names}")
                for n in names:
                    columns[n].append(inst[n])
            elif len(names) == 1:
                columns[names[0]].append(inst)
            else:
                raise ServingError(f"instances[{i}] must be an object with keys {names}")
    else:
        fmt = "columnar"
        inputs = body["inputs"]
        if isinstance(inputs, dict) and not _is_b64(inputs):
            columns = inputs
        elif len(names) == 1:
            columns = {names[0]: inputs}
        else:
            raise ServingError(f"'inputs' must be an object with keys {names}")
    arrays = {}
    for name, value in columns.items():
        spec = specs.get(name)
        where = f"{'instances' if fmt == 'row' else 'inputs'}[{name!r}]"
        if spec is not None and spec.dtype == "string":
            arrays[name] = _decode_b64_tree(value, where)
        else:
            _check_no_b64(value, where)
            arrays[name] = value
    return signature, validate_inputs(arrays, specs, strict=False, limits=limits), fmt


def format_rest_response(outputs: Mapping[str, np.ndarray], fmt: str) -> dict:
    """TF Serving's REST response: row -> {"predictions": [...]}, columnar -> {"outputs": ...}."""
    names = list(outputs)
    if fmt == "row":
        batch = len(next(iter(outputs.values())))
        if len(names) == 1:
            return {"predictions": [v.tolist() for v in outputs[names[0]]]}
        return {"predictions": [{n: outputs[n][i].tolist() for n in names} for i in range(batch)]}
    if len(names) == 1:
        return {"outputs": outputs[names[0]].tolist()}
    return {"outputs": {n: v.tolist() for n, v in outputs.items()}}


def build_rest_body(values, signature_name: str = DEFAULT_SIGNATURE, fmt: str = "instances",
                    input_name: Optional[str] = None) -> dict:
    """A TF Serving REST body for one of the export's signatures.

    Args:
      values: serving_default: uint8 array (B, H, W, 3); serve_image_bytes: list of encoded JPEG / PNG
        bytes; serve_tf_example: list of serialized tf.Example bytes (see `build_tf_example`).
      fmt: "instances" (row format) or "inputs" (columnar).
    """
    if fmt not in ("instances", "inputs"):
        raise ValueError(f"fmt={fmt!r} must be 'instances' or 'inputs'")
    name = input_name or SIGNATURE_INPUTS.get(signature_name)
    if name is None:
        raise ValueError(f"signature_name={signature_name!r}: pass input_name=...")
    if isinstance(values, np.ndarray) and values.dtype != object:
        rows = values.tolist()
    else:
        rows = [{"b64": base64.b64encode(bytes(v)).decode("ascii")} for v in values]
    body = {"signature_name": signature_name}
    if fmt == "instances":
        body["instances"] = [{name: r} for r in rows]
    else:
        body["inputs"] = {name: rows}
    return body
