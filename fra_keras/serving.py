"""Request handling for exported FRA models: validate, then call (TF Serving contract, onnxruntime).

Restored SavedModel signatures do not check input shapes, and a wrong-rank tensor can abort the whole
process (docs/stack.md, "Export and serving"). Everything that feeds an exported model -- the tests, the
clients in `export/clients/`, `fra_keras.export`'s verification -- goes through this module, which
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

Only NumPy is imported at module import; TensorFlow / onnxruntime / the serving protos are imported
when a function needs them, so a REST client can build bodies without loading TensorFlow.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import struct
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
TF_EXAMPLE_IMAGE_KEY = "image"
#: The input name of each signature written by `fra_keras.export`.
SIGNATURE_INPUTS = {"serving_default": "images", "serve_image_bytes": "image_bytes",
                    "serve_tf_example": "examples"}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8, CC are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ServingError(ValueError):
    """A request the model cannot serve; the message says what is wrong (HTTP 400 / INVALID_ARGUMENT)."""

    status = 400


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may hold (protects the server from huge or hostile requests)."""

    max_batch: int = 64
    max_side: int = 4096                 # largest image height / width, decoded or raw
    max_request_pixels: int = 1 << 26    # sum of H * W over the batch (~67 M pixels, ~200 MB of uint8)
    max_encoded_bytes: int = 20 << 20    # largest encoded image or tf.Example


DEFAULT_LIMITS = Limits()


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One named input of a signature: dtype ("uint8" | "string"), shape (None = any) and content.

    content: "image" (uint8 pixels, channels last), "encoded_image" (JPEG / PNG bytes) or
    "tf_example" (serialized tf.Example with the encoded image under `image`).
    """

    name: str
    dtype: str
    shape: Tuple[Optional[int], ...]
    content: str = "image"

    @classmethod
    def from_tensor_spec(cls, name: str, spec) -> "InputSpec":
        dtype = "string" if spec.dtype.name == "string" else spec.dtype.name
        shape = tuple(None if d is None else int(d) for d in spec.shape.as_list())
        return cls(name, dtype, shape, _content_for(name, dtype))

    @classmethod
    def from_dict(cls, name: str, values: Mapping[str, Any]) -> "InputSpec":
        return cls(name, values["dtype"], tuple(values["shape"]), values.get("content") or
                   _content_for(name, values["dtype"]))

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape), "content": self.content}

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype} ({dims})"


def export_signatures() -> Dict[str, Dict[str, InputSpec]]:
    """The input specs of the three signatures every fra_keras export has (what clients check against
    before sending; a server-side `Predictor` reads them from the SavedModel itself)."""
    return {
        "serving_default": {"images": InputSpec("images", "uint8", (None, None, None, 3), "image")},
        "serve_image_bytes": {"image_bytes": InputSpec("image_bytes", "string", (None,), "encoded_image")},
        "serve_tf_example": {"examples": InputSpec("examples", "string", (None,), "tf_example")},
    }


def _content_for(name: str, dtype: str) -> str:
    if dtype != "string":
        return "image"
    return "tf_example" if name == SIGNATURE_INPUTS["serve_tf_example"] else "encoded_image"


# Image headers -------------------------------------------------------------------------------
def image_size_from_header(data: bytes, where: str = "image") -> Tuple[str, int, int]:
    """(format, width, height) of JPEG / PNG bytes from the header alone; `ServingError` otherwise."""
    if not isinstance(data, (bytes, bytearray)):
        raise ServingError(f"{where}: expected encoded image bytes, got {type(data).__name__}")
    if data.startswith(_PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ServingError(f"{where}: truncated PNG ({len(data)} bytes, no IHDR header)")
        width, height = struct.unpack(">II", data[16:24])
        return "png", int(width), int(height)
    if data.startswith(_JPEG_MAGIC):
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                break
            marker = data[i + 1]
            if marker == 0xFF:               # fill byte
                i += 1
                continue
            if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2:i + 4])
            if marker in _JPEG_SOF:
                if i + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return "jpeg", int(width), int(height)
            if marker == 0xDA or length < 2:   # scan data before any frame header
                break
            i += 2 + length
        raise ServingError(f"{where}: not a decodable JPEG (no frame header in {len(data)} bytes)")
    head = bytes(data[:8])
    raise ServingError(f"{where}: not a JPEG or PNG image ({len(data)} bytes starting with {head!r})")


def _check_image_size(width: int, height: int, where: str, limits: Limits):
    if width < 1 or height < 1:
        raise ServingError(f"{where}: empty image ({width}x{height})")
    if max(width, height) > limits.max_side:
        raise ServingError(f"{where}: image is {width}x{height}; the largest side allowed is {limits.max_side}")


# Validation ----------------------------------------------------------------------------------
def validate_inputs(inputs: Mapping[str, Any], specs: Mapping[str, InputSpec], *, strict: bool = True,
                    limits: Limits = DEFAULT_LIMITS) -> Dict[str, np.ndarray]:
    """Check named inputs against a signature's specs; return NumPy arrays ready to feed.

    Args:
      inputs: name -> array-like. uint8 inputs: integer arrays; string inputs: arrays / lists of bytes.
      specs: name -> `InputSpec` of one signature.
      strict: True (gRPC, NumPy callers): dtypes must match exactly, as TF Serving requires for protos.
        False (REST JSON): integer-valued numbers are converted, with a range check.
    Raises: `ServingError` naming the input and what was expected.
    """
    if not isinstance(inputs, Mapping):
        raise ServingError(f"inputs must be a mapping of input name -> tensor, got {type(inputs).__name__}")
    missing = sorted(set(specs) - set(inputs))
    unknown = sorted(set(inputs) - set(specs))
    if missing or unknown:
        expected = ", ".join(f"{n!r}: {s.describe()}" for n, s in specs.items())
        raise ServingError(f"input names {sorted(inputs)} do not match the signature (missing {missing}, "
                           f"unknown {unknown}); expected {{{expected}}}")
    out = {}
    batch = None
    for name, spec in specs.items():
        array = _as_array(inputs[name], spec, strict)
        _check_shape(array, spec)
        if spec.shape and spec.shape[0] is None:
            n = array.shape[0]
            if n < 1:
                raise ServingError(f"input {name!r}: the batch is empty (shape {array.shape})")
            if n > limits.max_batch:
                raise ServingError(f"input {name!r}: batch of {n} exceeds the limit of {limits.max_batch}; "
                                   "split the request")
            if batch is not None and n != batch:
                raise ServingError(f"inputs disagree on the batch size ({batch} vs {n} for {name!r})")
            batch = n
        _check_content(array, spec, limits)
        out[name] = array
    return out


def _as_array(value, spec: InputSpec, strict: bool) -> np.ndarray:
    name = spec.name
    if spec.dtype == "string":
        try:
            array = np.asarray(value, dtype=object)
        except ValueError as e:
            raise ServingError(f"input {name!r}: ragged or malformed string tensor ({e})") from None
        flat = array.reshape(-1)
        for i, item in enumerate(flat):
            if isinstance(item, (bytearray, np.bytes_)):
                flat[i] = bytes(item)
            elif not isinstance(item, bytes):
                raise ServingError(f"input {name!r}: element {i} is {type(item).__name__}, expected bytes "
                                   '(REST: {"b64": "<base64>"})')
        return array
    try:
        array = np.asarray(value)
    except ValueError as e:
        raise ServingError(f"input {name!r}: ragged or malformed tensor ({str(e).splitlines()[0]})") from None
    if array.dtype == object:
        raise ServingError(f"input {name!r}: ragged or non-numeric values; expected {spec.describe()}")
    want = np.dtype(spec.dtype)
    if array.dtype == want:
        return array
    if strict:
        raise ServingError(f"input {name!r}: dtype {array.dtype} given, {spec.dtype} expected "
                           f"(shape {spec.describe()})")
    if array.dtype.kind not in "iuf" or array.dtype == np.bool_:
        raise ServingError(f"input {name!r}: values of type {array.dtype} given, {spec.dtype} numbers expected")
    if array.size:
        if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (np.floor(array) == array)):
            raise ServingError(f"input {name!r}: non-integer values given; {spec.dtype} pixels are integers")
        info = np.iinfo(want)
        lo, hi = array.min(), array.max()
        if lo < info.min or hi > info.max:
            raise ServingError(f"input {name!r}: values in [{lo}, {hi}] are outside the {spec.dtype} range "
                               f"[{info.min}, {info.max}]")
    return array.astype(want)


def _check_shape(array: np.ndarray, spec: InputSpec):
    if array.ndim != len(spec.shape):
        raise ServingError(f"input {spec.name!r}: rank {array.ndim} (shape {tuple(array.shape)}) given, "
                           f"rank {len(spec.shape)} expected: {spec.describe()}")
    for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
        if want is not None and got != want:
            raise ServingError(f"input {spec.name!r}: dimension {axis} is {got}, {want} expected "
                               f"(shape {tuple(array.shape)} given, {spec.describe()} expected)")


def _check_content(array: np.ndarray, spec: InputSpec, limits: Limits):
    name = spec.name
    if spec.content == "image":
        if array.ndim >= 3:
            h, w = array.shape[-3], array.shape[-2]
            _check_image_size(w, h, f"input {name!r}", limits)
            pixels = int(np.prod(array.shape[:-1]))
            if pixels > limits.max_request_pixels:
                raise ServingError(f"input {name!r}: {pixels} pixels in one request exceed the limit of "
                                   f"{limits.max_request_pixels}")
        return
    total = 0
    for i, item in enumerate(array.reshape(-1)):
        where = f"input {name!r}[{i}]"
        if len(item) > limits.max_encoded_bytes:
            raise ServingError(f"{where}: {len(item)} bytes exceed the limit of {limits.max_encoded_bytes}")
        if spec.content == "tf_example":
            item = _image_from_example(item, where)
        _, width, height = image_size_from_header(item, where)
        _check_image_size(width, height, where, limits)
        total += width * height
    if total > limits.max_request_pixels:
        raise ServingError(f"input {name!r}: {total} decoded pixels in one request exceed the limit of "
                           f"{limits.max_request_pixels}")


def _image_from_example(serialized: bytes, where: str) -> bytes:
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    try:
        example.ParseFromString(serialized)
    except DecodeError:
        raise ServingError(f"{where}: not a serialized tf.Example ({len(serialized)} bytes)") from None
    feature = example.features.feature
    if TF_EXAMPLE_IMAGE_KEY not in feature:
        raise ServingError(f"{where}: the tf.Example has no feature {TF_EXAMPLE_IMAGE_KEY!r} (features: "
                           f"{sorted(feature)}); put the encoded JPEG / PNG there as a bytes_list")
    values = feature[TF_EXAMPLE_IMAGE_KEY].bytes_list.value
    if len(values) != 1:
        raise ServingError(f"{where}: feature {TF_EXAMPLE_IMAGE_KEY!r} must hold exactly one bytes value "
                           f"(found {len(values)} bytes values)")
    return values[0]


# REST ----------------------------------------------------------------------------------------
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


# gRPC / protos -------------------------------------------------------------------------------
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


# Predictors ----------------------------------------------------------------------------------
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


# Client-side reading of the outputs -----------------------------------------------------------
def serve_command(model_name: str = "fra", export_root: str = "export/models") -> str:
    """The command that serves an export with TF Serving (REST on 8501, gRPC on 8500)."""
    return (f'docker run -p 8501:8501 -p 8500:8500 -v "$PWD/{export_root}/savedmodel/{model_name}:'
            f'/models/{model_name}" -e MODEL_NAME={model_name} tensorflow/serving')


def unreachable_message(protocol: str, where: str, reason: str, model_name: str = "fra") -> str:
    """One line for a client that found no server: what it tried and how to start one."""
    return (f"no TF Serving {protocol} server answered at {where} ({reason}); start one with: "
            f"{serve_command(model_name)} (or pass --host HOST:PORT)")


def summarize_outputs(outputs: Mapping[str, Any]) -> list:
    """Per image: embedding norm, the share of heatmap pixels each region wins, and for 1-D head outputs
    the top index and score. Peaks are picked here, in the client, not in the graph: an argmax baked into
    the graph can disagree between TF and ONNX on ties (np.argmax keeps the lowest index)."""
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    batch = len(next(iter(arrays.values())))
    rows = []
    for i in range(batch):
        row = {}
        for name, value in arrays.items():
            v = value[i]
            if name == "embedding":
                row["embedding_dim"] = int(v.shape[-1])
                row["embedding_norm"] = round(float(np.linalg.norm(v)), 6)
            elif name == "feature_map":
                row["feature_map_shape"] = list(v.shape)
            elif name == "heatmaps":
                k = v.shape[-1]
                winners = np.argmax(v.reshape(-1, k), axis=-1)
                share = np.bincount(winners, minlength=k) / winners.size
                row["region_share"] = [round(float(s), 4) for s in share]
            elif v.ndim == 1:
                row[name] = {"top": int(np.argmax(v)), "score": round(float(np.max(v)), 6)}
            else:
                row[name] = {"shape": list(v.shape)}
        rows.append(row)
    return rows


def read_image_file(path: str) -> np.ndarray:
    """A JPEG / PNG file as a uint8 RGB array (H, W, 3) (Pillow)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def stack_images(paths: Sequence[str]) -> np.ndarray:
    """Decoded images stacked into one uint8 batch; they must share a size (the model resizes)."""
    images = [read_image_file(p) for p in paths]
    sizes = sorted({im.shape for im in images})
    if len(sizes) > 1:
        raise ServingError(f"images of different sizes {sizes} cannot share a uint8 batch; send them one by "
                           "one, or as encoded bytes (signature serve_image_bytes)")
    return np.stack(images)
