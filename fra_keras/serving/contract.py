"""The serving contract of fra_keras exports: signatures, input specs, limits, and request validation.

Restored SavedModel signatures do not check input shapes, and a wrong-rank tensor can abort the whole
process (docs/stack.md, "Export and serving"). `validate_inputs` checks every request against the
signature's `InputSpec` *before* anything is called and turns each problem into a `ServingError` with a
one-line message (HTTP 400 semantics), never a crash. Image sizes are read from JPEG / PNG headers
(`image_size_from_header`) so that a hostile request is refused before anything decodes it.

Only NumPy is imported here; the tf.Example proto is imported when a `serve_tf_example` input is checked.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, Dict, Mapping, Optional, Tuple

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
