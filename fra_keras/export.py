"""`python -m fra_keras.export`: versioned SavedModel (TF Serving) + ONNX (onnxruntime / Triton), verified.

Commands::

    python -m fra_keras.export --model runs/X/model.keras --name fra --version 1
    python -m fra_keras.export --model runs/X/backbone.weights.h5 --head heads/expr.keras --name fra-expr
    python -m fra_keras.export --model export/models/savedmodel/fra/1 --name fra --version 2  # re-export
    python -m fra_keras.export verify export/models            # re-check every export under a folder

Layout under `--output-dir` (default export/models, git-ignored)::

    savedmodel/NAME/VERSION/   saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests,
                               manifest.json, verification.npz          <- TF Serving model base path: savedmodel/NAME
    onnx/NAME/VERSION/         model.onnx, manifest.json, verification.npz  <- Triton / ONNX model repository: onnx/
    onnx/NAME/config.pbtxt     a minimal Triton config (written once, never overwritten)

Each version is written to a hidden temporary folder beside its final place (`.tmp-...`, which TF
Serving and Triton ignore), verified, and renamed into place; an existing version is never replaced
unless `overwrite=True` / `--overwrite`.

Signatures (float32 outputs whatever the training precision; preprocessing inside the graph: bilinear
resize to the config's image_size, x / 255, (x - mean) / std with the training statistics):

* `serving_default(images: uint8 (B, H, W, 3))`
* `serve_image_bytes(image_bytes: string (B,))`        encoded JPEG / PNG
* `serve_tf_example(examples: string (B,))`            serialized tf.Example, feature `image` = encoded bytes

each returning `embedding` (B, C) (pooled backbone features), `feature_map` (B, h, w, C),
`heatmaps` (B, h, w, K) when the model has the region branch (prototypes), and the head's outputs
when a head is exported. The ONNX file holds the `serving_default` function (tf2onnx, opset
`ONNX_OPSET`, dynamic dimensions `batch`, `height`, `width`).

Verification (every export, and `verify`): checksums, no PyFunc / XLA-only ops, `tf.saved_model.load`,
`saved_model_cli show --all`, `onnx.checker`, the warm-up requests, and the outputs of onnxruntime vs
the SavedModel vs the Keras model on the same batches (1 and 4 images at image_size, 2 images at
another size) within `float32_tolerance(config)` (`TOLERANCES["keras_mixed"]` for the Keras
reference of a mixed-precision model).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

from fra_keras import cli_utils
from fra_keras.config import ConfigError, FRAConfig, atomic_write_text

ONNX_OPSET = 17
DEFAULT_OUTPUT_DIR = os.path.join("export", "models")
DEFAULT_NAME = "fra"
FORMATS = ("savedmodel", "onnx")
SIGNATURES = {"serving_default": "images", "serve_image_bytes": "image_bytes", "serve_tf_example": "examples"}
TF_EXAMPLE_IMAGE_KEY = "image"
BASE_OUTPUTS = ("embedding", "feature_map", "heatmaps")
MANIFEST = "manifest.json"
REFERENCE = "verification.npz"
WARMUP = os.path.join("assets.extra", "tf_serving_warmup_requests")
ONNX_FILE = "model.onnx"
FORBIDDEN_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
VERIFY_SEED = 20240617
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_OUTPUT_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class ExportError(ValueError):
    """Bad export request (paths, names, versions, heads); the message names the argument and value."""


class VerificationError(RuntimeError):
    """An export failed its checks; `problems` lists each failed check in one line."""

    def __init__(self, problems: Sequence[str], report: Optional[dict] = None):
        self.problems = list(problems)
        self.report = report
        super().__init__("; ".join(self.problems))


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """A comparison passes when max |a - b| <= atol + rtol * max |reference|."""

    atol: float
    rtol: float

    def limit(self, ref_max: float) -> float:
        return self.atol + self.rtol * ref_max


#: Mixed-precision models are exported in float32 but their Keras reference runs in float16 /
#: bfloat16: `keras_mixed` bounds that difference. Float32 comparisons use `float32_tolerance(config)`
#: ("float32" is added below, for callers without a config).
TOLERANCES = {
    "keras_mixed": Tolerance(atol=2e-2, rtol=5e-2),
}

FLOAT32_EPS = 2.0 ** -23          # float32 unit roundoff x 2 (1.19e-7)
#: Weight layers on the longest path of each backbone (the number in its name), plus the pixel
#: projector and a head (4 more).
BACKBONE_DEPTH = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}
EXTRA_DEPTH = 4
FLOAT32_SAFETY = 2.0
FLOAT32_ATOL = 1e-5               # for outputs whose max |reference| is about 0


def float32_tolerance(config: FRAConfig) -> Tolerance:
    """The tolerance between two float32 computations of the same export (Keras, SavedModel, ONNX).

    Different kernels (oneDNN / Eigen / onnxruntime) sum in different orders, so each layer adds a
    relative error of about eps * sqrt(K) (K: the longest accumulation, a 3x3 conv over the widest
    stage or a dense layer), and L layers add up to about L times that, relative to the scale of the
    output. The limit is therefore max|ref| * FLOAT32_SAFETY * eps * sqrt(K) * L (+ a tiny atol):
    2.5e-4 of max|ref| for the tiny preset, 8.7e-4 for the paper's ResNet-50. Real export faults
    (missing BatchNorm statistics, other weights, wrong normalisation or resize) change outputs by
    percents and stay far above it (docs/export.md, "What the verification guarantees").
    """
    depth = BACKBONE_DEPTH.get(config.backbone, 101) + EXTRA_DEPTH
    widest = 8 * int(config.backbone_width)                 # channels of the last stage's 3x3 convs
    accumulation = max(9 * widest, int(config.feature_channels), int(config.hidden_dim))
    rtol = FLOAT32_SAFETY * FLOAT32_EPS * math.sqrt(accumulation) * depth
    return Tolerance(atol=FLOAT32_ATOL, rtol=float(f"{rtol:.3g}"))


#: For callers without a config (export/tfx_trainer.py): the bound of the `paper` preset (ResNet-50,
#: the deepest preset), 8.7e-4. With a config, `float32_tolerance(config)` gives the model's own bound.
TOLERANCES["float32"] = float32_tolerance(FRAConfig.from_preset("paper"))


def tolerance_for(key: str, config: FRAConfig) -> Tolerance:
    """The Keras-vs-export tolerance named in verification.npz ("float32" or "keras_mixed")."""
    return TOLERANCES["keras_mixed"] if key == "keras_mixed" else float32_tolerance(config)


# =============================================================================================
# Sources
# =============================================================================================
@dataclasses.dataclass
class Source:
    """What an export is made from.

    kind: "keras" (model.keras from pre-training, or an in-memory FRA), "weights" (backbone.weights.h5 +
    config.json) or "savedmodel" (an earlier export, re-exported / verified as is).
    """

    kind: str
    path: Optional[str]
    config: FRAConfig
    backbone: Any = None          # the Keras backbone (reference), kind keras / weights
    model: Any = None             # the FRA model, kind keras
    manifest: Optional[dict] = None   # kind savedmodel: its manifest
    sha256: Optional[str] = None

    @property
    def has_regions(self) -> bool:
        if self.kind == "savedmodel":
            return bool(self.manifest["heatmaps"]["included"])
        return self.model is not None and bool(self.config.region_losses)

    @property
    def no_heatmaps_reason(self) -> str:
        if self.kind == "weights":
            return ("exported from a bare backbone.weights.h5: the prototypes (region embeddings) live in "
                    "the full model.keras; export that file to get heatmaps")
        if self.kind == "savedmodel":
            return self.manifest["heatmaps"].get("reason", "")
        return "the model was trained without the region branch (region_losses=False)"


def _is_savedmodel_dir(path: str) -> bool:
    return os.path.isdir(path) and (os.path.isfile(os.path.join(path, "saved_model.pb"))
                                    or os.path.isfile(os.path.join(path, "saved_model.pbtxt")))


def check_source_path(path: str) -> str:
    """Cheap checks before TensorFlow loads: the kind of `path` ("keras" | "weights" | "savedmodel")."""
    if not isinstance(path, str) or not path:
        raise ExportError(f"--model {path!r}: give a model.keras, a backbone.weights.h5 or an exported SavedModel")
    if not os.path.exists(path):
        raise ExportError(f"--model {path!r} does not exist")
    if os.path.isdir(path):
        if not _is_savedmodel_dir(path):
            raise ExportError(f"--model {path!r} is a folder without saved_model.pb; give a model.keras, a "
                              "backbone.weights.h5 or a SavedModel version folder (savedmodel/NAME/VERSION)")
        if not os.path.isfile(os.path.join(path, MANIFEST)):
            raise ExportError(f"--model {path!r} is a SavedModel without {MANIFEST}: only fra_keras exports "
                              "can be re-exported")
        return "savedmodel"
    if path.endswith(".keras"):
        return "keras"
    if path.endswith(".weights.h5"):
        cfg = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
        if not os.path.isfile(cfg):
            raise ExportError(f"--model {path!r}: no config.json beside it (pre-training writes one in the run "
                              "folder); copy it there")
        return "weights"
    raise ExportError(f"--model {path!r} must be a .keras file, a .weights.h5 file or a SavedModel folder")


def load_source(model) -> Source:
    """A `Source` from a path (see `check_source_path`) or an in-memory FRA model."""
    if not isinstance(model, str):
        if not (hasattr(model, "backbone") and hasattr(model, "config")):
            raise ExportError(f"model={type(model).__name__}: pass a path or an FRA model (with .backbone, .config)")
        return Source("keras", None, model.config, backbone=model.backbone, model=model)
    kind = check_source_path(model)
    if kind == "savedmodel":
        manifest = read_manifest(model)
        problems = check_checksums(model, manifest)
        if problems:
            raise ExportError(f"--model {model!r} does not match its manifest: {'; '.join(problems)}")
        return Source("savedmodel", model, FRAConfig.from_dict(manifest["config"]), manifest=manifest,
                      sha256=_sha256(os.path.join(model, MANIFEST)))
    import keras

    import fra_keras.models.fra  # noqa: F401  (registers FRA so that model.keras loads)
    from fra_keras.models.backbone import load_backbone

    if kind == "keras":
        try:
            loaded = keras.saving.load_model(model, compile=False)
        except Exception as e:  # corrupt zip, unknown class, ...
            raise ExportError(f"--model {model!r} could not be loaded: {_first_line(e)}") from None
        if not (hasattr(loaded, "backbone") and hasattr(loaded, "config")):
            raise ExportError(f"--model {model!r} holds a {type(loaded).__name__}, not an FRA model (no backbone)")
        return Source("keras", model, loaded.config, backbone=loaded.backbone, model=loaded, sha256=_sha256(model))
    cfg_path = os.path.join(os.path.dirname(os.path.abspath(model)), "config.json")
    config = FRAConfig.from_json(cfg_path)
    try:
        backbone = load_backbone(model, config)
    except Exception as e:
        raise ExportError(f"--model {model!r} does not fit the architecture of {cfg_path}: {_first_line(e)}") from None
    return Source("weights", model, config, backbone=backbone, sha256=_sha256(model))


def load_head(head):
    """A head: a keras.Model (B, h, w, C) -> tensor or dict of tensors, or a path to a .keras file."""
    if head is None or not isinstance(head, str):
        return head
    if not os.path.isfile(head) or not head.endswith(".keras"):
        raise ExportError(f"--head {head!r} must be an existing .keras file")
    import keras

    try:
        import fra_keras.downstream.heads  # noqa: F401  (registers the downstream heads' custom layers)
    except ImportError:
        pass
    try:
        return keras.saving.load_model(head, compile=False)
    except Exception as e:
        raise ExportError(f"--head {head!r} could not be loaded: {_first_line(e)}") from None


def _snake_case(name: str) -> str:
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def head_output_names(head) -> List[str]:
    """Names the head's outputs get in the export.

    A dict output keeps its keys; a list output uses the output layers' names; a single tensor is named
    after its output layer when that layer was named by the user, else `head_output`.
    """
    output = head.output
    if isinstance(output, dict):
        names = list(output)
    else:
        tensors = list(output) if isinstance(output, (list, tuple)) else [output]
        ops = [t._keras_history.operation for t in tensors]
        auto = [re.fullmatch(rf"{_snake_case(type(op).__name__)}(_\d+)?", op.name) is not None for op in ops]
        if len(ops) == 1:
            names = ["head_output" if auto[0] else ops[0].name]
        else:
            names = [f"head_output_{i}" if a else op.name for i, (op, a) in enumerate(zip(ops, auto))]
    for n in names:
        if not _OUTPUT_NAME_RE.match(str(n)):
            raise ExportError(f"head output name {n!r} must match {_OUTPUT_NAME_RE.pattern}")
        if n in BASE_OUTPUTS:
            raise ExportError(f"head output name {n!r} clashes with the backbone output of the same name; "
                              "rename the head's output layer or dict key")
    if len(set(names)) != len(names):
        raise ExportError(f"head output names {names} are not unique")
    return [str(n) for n in names]


def check_head(head, config: FRAConfig) -> List[str]:
    """Check the head takes the backbone feature map; return its output names."""
    inputs = getattr(head, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ExportError(f"the head must have one input, the feature map (B, h, w, {config.feature_channels}); "
                          f"it has {len(inputs or [])}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] not in (None, config.feature_channels):
        raise ExportError(f"the head's input has shape {shape}; it must take the backbone feature map "
                          f"(None, h, w, {config.feature_channels})")
    return head_output_names(head)


# =============================================================================================
# The serving module (plain tf.functions on a tf.Module: each weight stored once)
# =============================================================================================
def _float32_components(source: Source):
    """Float32 copies of the backbone and pixel projector (compute in float32 whatever the training
    precision, plain BatchNorm instead of SyncBN) with the trained weights."""
    from fra_keras.models.backbone import build_backbone
    from fra_keras.models.fra import dtype_policy

    config = source.config
    with dtype_policy("float32"):
        backbone = build_backbone(config.replace(precision="float32"), name="backbone", synchronized=False)
        backbone.set_weights(source.backbone.get_weights())
        pixel_proj, prototypes = None, None
        if source.has_regions:
            original = source.model.neck.pixel_proj
            pixel_proj = type(original).from_config({**original.get_config(), "synchronized": False,
                                                     "dtype": "float32", "name": "pixel_proj"})
            pixel_proj.build((None, None, None, config.feature_channels))
            pixel_proj.set_weights(original.get_weights())
            prototypes = source.model.prototypes.numpy().astype("float32")
    return backbone, pixel_proj, prototypes


def build_serving_module(config: FRAConfig, backbone, pixel_proj=None, prototypes=None, head=None,
                         head_names: Sequence[str] = ()):
    """A `tf.Module` with the three serving tf.functions (see the module docstring)."""
    import tensorflow as tf

    from fra_keras import losses

    size = int(config.image_size)
    mean = [float(v) for v in config.mean]
    std = [float(v) for v in config.std]
    scale = float(config.heatmap_scale)
    head_names = list(head_names)

    def weights_of(layer) -> dict:
        # Only the variables are tracked, not the Keras objects: tracking a Keras model makes
        # tf.saved_model.save trace its `_default_save_signature` with unknown spatial dimensions
        # (which fails for some heads, e.g. bilinear UpSampling2D) and stores extra functions.
        out = {}
        for w in layer.weights:
            value = getattr(w, "value", w)
            out[w.path] = value if isinstance(value, tf.Variable) else w
        return out

    class FRAServing(tf.Module):
        def __init__(self):
            super().__init__(name="fra_serving")
            self.backbone_weights = weights_of(backbone)
            if pixel_proj is not None:
                self.pixel_proj_weights = weights_of(pixel_proj)
                self.prototypes = tf.Variable(prototypes, trainable=False, name="prototypes")
            if head is not None:
                self.head_weights = weights_of(head)

        def _resize(self, images):
            return tf.image.resize(tf.cast(images, tf.float32), [size, size], method="bilinear")

        def _outputs(self, resized):
            x = (resized / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
            features = tf.cast(backbone(x, training=False), tf.float32)
            out = {"embedding": tf.reduce_mean(features, axis=[1, 2]), "feature_map": features}
            if pixel_proj is not None:
                pixel = pixel_proj(features, training=False)
                out["heatmaps"] = losses.region_attention(losses.region_logits(pixel, self.prototypes), scale)
            if head is not None:
                result = head(features, training=False)
                if isinstance(result, dict):
                    values = [result[k] for k in head_names]
                elif isinstance(result, (list, tuple)):
                    values = list(result)
                else:
                    values = [result]
                for n, v in zip(head_names, values):
                    out[n] = tf.cast(v, tf.float32)
            return out

        def _decode(self, encoded):
            image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
            image.set_shape([None, None, 3])
            return self._resize(image[tf.newaxis])[0]

        def _from_encoded(self, encoded):
            resized = tf.map_fn(self._decode, encoded,
                                fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
            return self._outputs(resized)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def serve_images(self, images):
            return self._outputs(self._resize(images))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_image_bytes(self, image_bytes):
            return self._from_encoded(image_bytes)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve_tf_example(self, examples):
            parsed = tf.io.parse_example(
                examples, {TF_EXAMPLE_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
            return self._from_encoded(parsed[TF_EXAMPLE_IMAGE_KEY])

    return FRAServing()


def _signatures(module) -> dict:
    return {"serving_default": module.serve_images, "serve_image_bytes": module.serve_image_bytes,
            "serve_tf_example": module.serve_tf_example}


# =============================================================================================
# Reference (Keras) outputs and verification inputs
# =============================================================================================
def verification_inputs(image_size: int, seed: int = VERIFY_SEED) -> dict:
    """Deterministic uint8 batches: b4 (4 images at image_size; b1 is its first image) and odd (2 images
    at another size, so that the in-graph resize is checked too)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    s = int(image_size)
    odd = (2, s + s // 4 + 3, max(8, s - s // 4 - 5), 3)
    return {"b4": rng.randint(0, 256, (4, s, s, 3)).astype(np.uint8),
            "odd": rng.randint(0, 256, odd).astype(np.uint8)}


def keras_reference(source: Source, images, head=None, head_names: Sequence[str] = ()) -> dict:
    """Outputs of the *original* Keras objects (FRA.embed / backbone / heatmaps, the head) on uint8
    images, with the training normalisation of fra_keras.data.augment."""
    import tensorflow as tf

    from fra_keras.data.augment import normalize

    size = source.config.image_size
    x = tf.image.resize(tf.cast(images, tf.float32) / 255.0, [size, size], method="bilinear")
    x = normalize(x, source.config)
    features = source.backbone(x, training=False)
    out = {"feature_map": features}
    if source.model is not None:
        out["embedding"] = source.model.embed(x, training=False)
        if source.has_regions:
            out["heatmaps"] = source.model.heatmaps(x, training=False)
    else:
        out["embedding"] = tf.reduce_mean(features, axis=[1, 2])
    if head is not None:
        result = head(features, training=False)
        values = ([result[k] for k in head_names] if isinstance(result, dict)
                  else list(result) if isinstance(result, (list, tuple)) else [result])
        out.update(zip(head_names, values))
    return {k: tf.cast(v, tf.float32).numpy() for k, v in out.items()}


def _reference_batches(source, inputs, head, head_names) -> dict:
    ref = {}
    for batch, images in (("b1", inputs["b4"][:1]), ("b4", inputs["b4"]), ("odd", inputs["odd"])):
        ref[batch] = keras_reference(source, images, head, head_names)
    return ref


def save_reference(path: str, inputs: dict, reference: dict, tolerance_key: str):
    import numpy as np

    arrays = {f"input__{k}": v for k, v in inputs.items()}
    for batch, outs in reference.items():
        for name, value in outs.items():
            arrays[f"keras__{batch}__{name}"] = value
    with open(path, "wb") as f:
        np.savez_compressed(f, tolerance=np.array(tolerance_key), **arrays)


def load_reference(path: str):
    """(inputs, keras reference outputs per batch, tolerance key) from a verification.npz."""
    import numpy as np

    inputs, reference = {}, {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            parts = key.split("__")
            if parts[0] == "input":
                inputs[parts[1]] = data[key]
            elif parts[0] == "keras":
                reference.setdefault(parts[1], {})[parts[2]] = data[key]
        tolerance_key = str(data["tolerance"]) if "tolerance" in data.files else "float32"
    return inputs, reference, tolerance_key


# =============================================================================================
# Files: checksums, manifest, warm-up records, graph scan, saved_model_cli
# =============================================================================================
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_checksums(folder: str) -> Dict[str, str]:
    """sha256 of every file under `folder` except the manifest, by relative path."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            if rel != MANIFEST:
                out[rel] = _sha256(full)
    return dict(sorted(out.items()))


def check_checksums(folder: str, manifest: dict) -> List[str]:
    expected = manifest.get("files", {})
    actual = file_checksums(folder)
    problems = []
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            problems.append(f"{rel}: missing")
        elif rel not in expected:
            problems.append(f"{rel}: not listed in {MANIFEST}")
        elif expected[rel] != actual[rel]:
            problems.append(f"{rel}: sha256 differs from {MANIFEST}")
    return problems


def read_manifest(folder: str) -> dict:
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ExportError(f"{folder!r} has no {MANIFEST}; is it an fra_keras export version folder?") from None
    except json.JSONDecodeError as e:
        raise ExportError(f"{path!r} is not valid JSON: {e}") from None


def write_manifest(folder: str, manifest: dict):
    atomic_write_text(os.path.join(folder, MANIFEST), json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def tool_versions() -> dict:
    from importlib import metadata

    import fra_keras

    out = {"python": sys.version.split()[0], "fra_keras": fra_keras.__version__}
    for dist in ("tensorflow", "keras", "numpy", "protobuf", "tf2onnx", "onnx", "onnxruntime",
                 "tensorflow-serving-api"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


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
    import numpy as np
    import tensorflow as tf

    from fra_keras.serving import build_tf_example

    s = int(config.image_size)
    yy, xx = np.mgrid[0:s, 0:s]
    image = np.stack([xx * 255 // max(1, s - 1), yy * 255 // max(1, s - 1), np.full_like(xx, 128)], -1)
    image = image.astype(np.uint8)[np.newaxis]
    png = tf.io.encode_png(image[0]).numpy()
    return [("serving_default", "images", image), ("serve_image_bytes", "image_bytes", [png]),
            ("serve_tf_example", "examples", [build_tf_example(png)])]


def write_warmup(folder: str, config: FRAConfig, model_name: str) -> int:
    """assets.extra/tf_serving_warmup_requests: a TFRecord of PredictionLog protos TF Serving replays
    at load time (https://www.tensorflow.org/tfx/serving/saved_model_warmup)."""
    import tensorflow as tf

    path = os.path.join(folder, WARMUP)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    records = warmup_requests(config, model_name)
    try:
        from tensorflow_serving.apis import prediction_log_pb2

        from fra_keras.serving import build_predict_request
    except ImportError:  # the client protos are a test extra; encode the wrapper messages by hand
        prediction_log_pb2 = None
    with tf.io.TFRecordWriter(path) as writer:
        for signature, input_name, value in records:
            if prediction_log_pb2 is not None:
                request = build_predict_request(model_name, value, signature)
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
            else:
                if isinstance(value, list):
                    proto = tf.make_tensor_proto([bytes(v) for v in value], dtype=tf.string, shape=[len(value)])
                else:
                    proto = tf.make_tensor_proto(value)
                writer.write(prediction_log_bytes(model_name, signature, input_name, proto))
    return len(records)


def read_warmup(folder: str) -> list:
    """The PredictRequests in a SavedModel's warm-up file."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(os.path.join(folder, WARMUP)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        requests.append(log.predict_log.request)
    return requests


def scan_graph_ops(saved_model_dir: str) -> List[str]:
    """Problems in a SavedModel graph: Python-function ops (PyFunc, EagerPyFunc: need the Python
    interpreter, TF Serving cannot run them) and XLA-only ops / must-compile functions."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    problems = []
    for meta in proto.meta_graphs:
        graph = meta.graph_def
        nodes = [(n, "graph") for n in graph.node]
        for fn in graph.library.function:
            nodes += [(n, fn.signature.name) for n in fn.node_def]
            if fn.attr["_XlaMustCompile"].b:
                problems.append(f"function {fn.signature.name} must be compiled with XLA (jit_compile=True)")
        for node, where in nodes:
            if node.op in FORBIDDEN_OPS:
                problems.append(f"Python-function op {node.op} ({node.name} in {where})")
            elif node.op.startswith("Xla") or node.op.startswith("_Xla"):
                problems.append(f"XLA-only op {node.op} ({node.name} in {where})")
    return problems


def _saved_model_cli_command(saved_model_dir: str) -> list:
    exe = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    cmd = [exe] if os.path.isfile(exe) else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    return cmd + ["show", "--dir", saved_model_dir, "--all"]


def start_saved_model_cli(saved_model_dir: str) -> subprocess.Popen:
    """Start `saved_model_cli show --dir DIR --all` (this interpreter's bin folder) in the background:
    its TensorFlow start-up overlaps with the rest of the checks. Finish with `finish_saved_model_cli`."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen(_saved_model_cli_command(saved_model_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish_saved_model_cli(proc: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for the subprocess; its stdout, or VerificationError when it failed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise VerificationError([f"saved_model_cli did not finish within {timeout:.0f}s"]) from None
    if proc.returncode != 0:
        tail = (err or out).strip().splitlines()[-1:] or ["no output"]
        raise VerificationError([f"saved_model_cli exited with {proc.returncode}: {tail[0]}"])
    return out


def saved_model_cli_show(saved_model_dir: str, timeout: float = 600) -> str:
    """`saved_model_cli show --dir DIR --all`; its stdout."""
    return finish_saved_model_cli(start_saved_model_cli(saved_model_dir), timeout)


# =============================================================================================
# ONNX
# =============================================================================================
def convert_to_onnx(saved_model_dir: str, output_path: str, opset: int = ONNX_OPSET,
                    metadata: Optional[Dict[str, str]] = None, version: Optional[int] = None, loaded=None):
    """tf2onnx conversion of the SavedModel's `serving_default` (the uint8 function) to `output_path`.

    Dynamic dimensions are named batch / height / width; `metadata` goes to metadata_props.
    """
    import logging

    import onnx
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    tf2onnx.logging.set_level(logging.ERROR)
    loaded = loaded if loaded is not None else tf.saved_model.load(saved_model_dir)
    signature = loaded.signatures["serving_default"]
    fn = tf.function(lambda images: signature(images=images))
    spec = [tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")]
    try:
        model_proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    except Exception as e:
        raise VerificationError([f"tf2onnx conversion failed: {_first_line(e)}"]) from None
    graph = model_proto.graph
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        for dim, label in zip(dims, ("batch", "height", "width")):
            if not dim.HasField("dim_value"):
                dim.dim_param = label
    for value in graph.output:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    del model_proto.metadata_props[:]
    for key, val in (metadata or {}).items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = str(key), str(val)
    if version is not None:
        model_proto.model_version = int(version)
    model_proto.doc_string = "fra_keras export: uint8 images (batch, height, width, 3) -> embeddings, maps"
    onnx.save(model_proto, output_path)
    return model_proto


# =============================================================================================
# Verification
# =============================================================================================
def _compare(a: dict, b: dict, names: Sequence[str], tol: Tolerance, label: str, report: dict,
             problems: list):
    import numpy as np

    entry = report.setdefault(label, {})
    for name in names:
        if name not in a or name not in b:
            problems.append(f"{label}: output {name!r} missing")
            continue
        x, y = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
        if x.shape != y.shape:
            problems.append(f"{label}: {name} shapes differ {x.shape} vs {y.shape}")
            continue
        diff = float(np.max(np.abs(x - y))) if x.size else 0.0
        ref = float(np.max(np.abs(y))) if y.size else 0.0
        limit = tol.limit(ref)
        entry[name] = max(entry.get(name, 0.0), diff)
        if not np.isfinite(diff) or diff > limit:
            problems.append(f"{label}: {name} max abs difference {diff:.3g} exceeds {limit:.3g} "
                            f"(atol {tol.atol:.3g} + rtol {tol.rtol:.3g} * max|ref| {ref:.3g})")


def verify_version(sm_dir: Optional[str], onnx_dir: Optional[str], reference: Optional[dict] = None,
                   saved_model_cli=True, loaded=None) -> dict:
    """Check one export version (its SavedModel folder and / or ONNX folder); raise VerificationError.

    `reference`: Keras outputs per batch (b1, b4, odd) computed now; default: the Keras outputs stored
    in verification.npz at export time. `saved_model_cli`: True (run it), False (skip it) or a running
    `start_saved_model_cli` process. `loaded`: the SavedModel already loaded from `sm_dir`.
    Returns the report (max abs differences per comparison).
    """
    cli = saved_model_cli
    if sm_dir is not None and cli is True:
        cli = start_saved_model_cli(sm_dir)
    try:
        return _verify_version(sm_dir, onnx_dir, reference, cli if sm_dir is not None else None, loaded)
    finally:
        if isinstance(cli, subprocess.Popen) and cli.poll() is None:
            cli.kill()
            cli.communicate()


def _verify_version(sm_dir, onnx_dir, reference, cli, loaded) -> dict:
    import numpy as np

    from fra_keras.serving import OnnxPredictor, Predictor, ServingError

    problems: List[str] = []
    report: Dict[str, Any] = {"checks": []}
    diffs: Dict[str, dict] = {}
    folder = sm_dir or onnx_dir
    manifest = read_manifest(folder)
    names = list(manifest["outputs"])
    for d in filter(None, (sm_dir, onnx_dir)):
        problems += [f"{os.path.basename(os.path.dirname(d))}/{os.path.basename(d)}: {p}"
                     for p in check_checksums(d, read_manifest(d))]
    if problems:  # the files are not what was verified at export: nothing else is meaningful
        raise VerificationError(problems, report)
    report["checks"].append("checksums")
    inputs, stored, tol_key = load_reference(os.path.join(folder, REFERENCE))
    keras_ref = reference or stored
    report["keras_reference"] = "computed now" if reference else f"stored at export ({REFERENCE})"
    config = FRAConfig.from_dict(manifest["config"])
    keras_tol = tolerance_for(tol_key, config)
    tight = float32_tolerance(config)
    report["tolerances"] = {"keras": dataclasses.asdict(keras_tol), "export": dataclasses.asdict(tight)}
    batches = {"b1": inputs["b4"][:1], "b4": inputs["b4"], "odd": inputs["odd"]}

    sm_out = {}
    if sm_dir is not None:
        import tensorflow as tf

        problems += scan_graph_ops(sm_dir)
        report["checks"].append("graph ops (no PyFunc / XLA-only)")
        try:
            loaded = loaded if loaded is not None else tf.saved_model.load(sm_dir)
        except Exception as e:
            raise VerificationError(problems + [f"tf.saved_model.load failed: {_first_line(e)}"], report) from None
        report["checks"].append("tf.saved_model.load")
        if sorted(loaded.signatures) != sorted(SIGNATURES):
            problems.append(f"signatures {sorted(loaded.signatures)} != {sorted(SIGNATURES)}")
        predictor = Predictor(loaded)
        for sig, input_name in SIGNATURES.items():
            if sig in predictor.signatures and list(predictor.signatures[sig]) != [input_name]:
                problems.append(f"{sig}: inputs {list(predictor.signatures[sig])}, expected [{input_name!r}]")
            if sig in loaded.signatures:
                outs = sorted(loaded.signatures[sig].structured_outputs)
                if outs != sorted(names):
                    problems.append(f"{sig}: outputs {outs} differ from the manifest's {sorted(names)}")
        if isinstance(cli, subprocess.Popen):
            text = finish_saved_model_cli(cli)
            for sig, input_name in SIGNATURES.items():
                if f"signature_def['{sig}']" not in text or f"inputs['{input_name}']" not in text:
                    problems.append(f"saved_model_cli show --all does not list {sig}({input_name})")
            report["checks"].append("saved_model_cli show --all")
        if problems:
            raise VerificationError(problems, report)
        try:
            for batch, images in batches.items():
                sm_out[batch] = predictor.predict({"images": images})
                _compare(sm_out[batch], keras_ref[batch], names, keras_tol, "savedmodel_vs_keras", diffs, problems)
            pngs = [tf.io.encode_png(im).numpy() for im in inputs["b4"]]
            from fra_keras.serving import build_tf_example

            by_bytes = predictor.predict({"image_bytes": np.array(pngs, dtype=object)}, "serve_image_bytes")
            by_example = predictor.predict({"examples": np.array([build_tf_example(p) for p in pngs], dtype=object)},
                                           "serve_tf_example")
            _compare(by_bytes, sm_out["b4"], names, tight, "image_bytes_vs_images", diffs, problems)
            _compare(by_example, sm_out["b4"], names, tight, "tf_example_vs_images", diffs, problems)
            report["checks"].append("serving_default / serve_image_bytes / serve_tf_example outputs")
            try:
                warm = read_warmup(sm_dir)
            except ImportError:  # tensorflow-serving-api not installed: check the file is there
                warm = None
                if not os.path.isfile(os.path.join(sm_dir, WARMUP)):
                    problems.append(f"{WARMUP} is missing")
                report["checks"].append("warm-up file present (install tensorflow-serving-api to replay it)")
            if warm is not None:
                for request in warm:
                    predictor.handle_grpc(request)
                if len(warm) != len(SIGNATURES):
                    problems.append(f"{WARMUP}: {len(warm)} requests, expected {len(SIGNATURES)}")
                report["checks"].append(f"{len(warm)} warm-up requests replayed through the gRPC contract")
        except ServingError as e:
            problems.append(f"SavedModel rejected a verification request: {e}")

    if onnx_dir is not None:
        import onnx

        path = os.path.join(onnx_dir, ONNX_FILE)
        try:
            onnx.checker.check_model(path, full_check=True)
        except Exception as e:
            raise VerificationError(problems + [f"onnx.checker: {_first_line(e)}"], report) from None
        report["checks"].append("onnx.checker (full_check)")
        model = onnx.load(path, load_external_data=False)
        graph_inputs = [i for i in model.graph.input]
        dims = [d.dim_param or d.dim_value for d in graph_inputs[0].type.tensor_type.shape.dim] if graph_inputs else []
        if [i.name for i in graph_inputs] != ["images"] or dims[:1] != ["batch"]:
            problems.append(f"ONNX input {[i.name for i in graph_inputs]} dims {dims}: expected images (batch, ...)")
        outs = sorted(o.name for o in model.graph.output)
        if outs != sorted(names):
            problems.append(f"ONNX outputs {outs} differ from the manifest's {sorted(names)}")
        try:
            ort = OnnxPredictor(path)
            for batch, images in batches.items():
                out = ort.predict({"images": images})
                _compare(out, keras_ref[batch], names, keras_tol, "onnx_vs_keras", diffs, problems)
                if sm_out:
                    _compare(out, sm_out[batch], names, tight, "onnx_vs_savedmodel", diffs, problems)
            report["checks"].append("onnxruntime outputs")
        except ServingError as e:
            problems.append(f"onnxruntime rejected a verification request: {e}")
    report["max_abs_diff"] = diffs
    report["batches"] = {k: list(v.shape) for k, v in batches.items()}
    report["ok"] = not problems
    if problems:
        raise VerificationError(problems, report)
    return report


def find_versions(path: str) -> List[dict]:
    """Export versions under `path` (an output root, a format folder, a NAME folder or a version folder):
    [{"name", "version", "savedmodel": dir | None, "onnx": dir | None}]."""
    path = os.path.abspath(path)
    found: Dict[tuple, dict] = {}
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if MANIFEST not in files:
            continue
        try:
            manifest = read_manifest(root)
            key = (manifest["name"], int(manifest["version"]), manifest["format"])
        except (ExportError, KeyError, ValueError, TypeError):
            continue
        if manifest.get("format") not in FORMATS:
            continue
        entry = found.setdefault(key[:2], {"name": key[0], "version": key[1], "savedmodel": None, "onnx": None})
        entry[key[2]] = root
        dirs[:] = []
    # A version folder of one format: pick up its sibling in the other format.
    for entry in found.values():
        for fmt, other in (("savedmodel", "onnx"), ("onnx", "savedmodel")):
            d = entry[fmt]
            if d and entry[other] is None:
                root = os.path.dirname(os.path.dirname(os.path.dirname(d)))
                sibling = os.path.join(root, other, entry["name"], str(entry["version"]))
                if os.path.isfile(os.path.join(sibling, MANIFEST)):
                    entry[other] = sibling
    return [found[k] for k in sorted(found)]


def verify(path: str, model=None, head=None, saved_model_cli: bool = True) -> List[dict]:
    """Verify every export version found under `path`; `model` (and `head`): recompute the Keras
    reference from them instead of using the stored one. Raises VerificationError listing all problems."""
    versions = find_versions(path)
    if not versions:
        raise ExportError(f"no fra_keras export (a folder with {MANIFEST}) under {path!r}")
    source = load_source(model) if model is not None else None
    if source is not None and source.kind == "savedmodel":
        raise ExportError("verify --model needs the Keras model (model.keras / backbone.weights.h5), not a SavedModel")
    head_model = load_head(head)
    results, problems = [], []
    for entry in versions:
        reference = None
        if source is not None:
            folder = entry["savedmodel"] or entry["onnx"]
            inputs, _, _ = load_reference(os.path.join(folder, REFERENCE))
            names = [n for n in read_manifest(folder)["outputs"] if n not in BASE_OUTPUTS]
            reference = _reference_batches(source, inputs, head_model, names)
        label = f"{entry['name']}/{entry['version']}"
        try:
            report = verify_version(entry["savedmodel"], entry["onnx"], reference, saved_model_cli)
        except VerificationError as e:
            problems += [f"{label}: {p}" for p in e.problems]
            report = e.report or {"ok": False}
        results.append({**entry, "report": report})
    if problems:
        raise VerificationError(problems, {"versions": results})
    return results


# =============================================================================================
# Export
# =============================================================================================
@dataclasses.dataclass
class ExportResult:
    name: str
    version: int
    paths: Dict[str, str]          # format -> final folder
    manifest: dict                 # the SavedModel manifest (or ONNX when only ONNX was written)
    report: dict                   # verification report


def default_version() -> int:
    """A timestamp integer (YYYYMMDDHHMMSS, UTC): later exports get higher versions."""
    return int(datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S"))


def check_request(output_dir: str, name: str, version, formats: Sequence[str], overwrite: bool):
    """Validate names / versions / formats and that the destinations are free; return the final paths."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ExportError(f"--name {name!r} must match {_NAME_RE.pattern} (it becomes a folder and the "
                          "served model name)")
    if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
        raise ExportError(f"--version {version!r} must be a positive integer (TF Serving / Triton versions "
                          "are numbers; the highest is served by default)")
    formats = tuple(formats)
    if not formats or any(f not in FORMATS for f in formats) or len(set(formats)) != len(formats):
        raise ExportError(f"--formats {','.join(formats)!r}: choose one or more of {','.join(FORMATS)}")
    paths = {fmt: os.path.join(output_dir, fmt, name, str(version)) for fmt in formats}
    for fmt, final in paths.items():
        if os.path.exists(final) and not overwrite:
            raise ExportError(f"{final} already exists; pass --overwrite to replace it or choose another --version")
    return paths


#: What `--formats onnx` needs (import name -> pip name); all three come with the `onnx` extra.
ONNX_TOOLS = {"onnx": "onnx", "tf2onnx": "tf2onnx", "onnxruntime": "onnxruntime"}


def check_onnx_tools(formats: Sequence[str]):
    """Raise ExportError naming the missing packages when "onnx" is among `formats` and the ONNX tools
    are not installed (checked without importing them, so it is instant and comes before any work)."""
    import importlib.util

    if "onnx" not in formats:
        return
    missing = []
    for module, package in ONNX_TOOLS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(package)
    if missing:
        raise ExportError(f"--formats {','.join(formats)!r} needs {', '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed: pip install -e \".[onnx]\" "
                          "(or export only the SavedModel with --formats savedmodel)")


def _make_dirs(path: str) -> List[str]:
    """os.makedirs(path); returns the folders it created, deepest first (to remove them on failure)."""
    created = []
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        created.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    os.makedirs(path, exist_ok=True)
    return created


def _remove_empty(folders: Sequence[str]):
    """Remove the folders this export created that are still empty (deepest first)."""
    for folder in sorted(set(folders), key=len, reverse=True):
        try:
            os.rmdir(folder)
        except OSError:   # not empty (something else lives there now) or already gone
            pass


def _manifest_common(source: Source, name: str, version: int, outputs: dict, head_info, n_params: int,
                     output_dir: str, formats) -> dict:
    c = source.config
    grid = c.feature_grid
    if source.kind == "savedmodel":
        base = source.manifest
        heatmaps = base["heatmaps"]
        head_info = base.get("head")
        n_params = base["parameters"]["count"]
        src = {"kind": "savedmodel", "path": os.path.abspath(source.path), "manifest_sha256": source.sha256,
               "original": base.get("source")}
    else:
        heatmaps = ({"included": True, "num_regions": c.num_regions, "grid": [grid, grid],
                     "description": "softmax over K of cos(pixel projection, prototypes) / heatmap_scale"}
                    if source.has_regions else {"included": False, "reason": source.no_heatmaps_reason})
        src = {"kind": source.kind, "path": os.path.abspath(source.path) if source.path else None,
               "sha256": source.sha256}
    return {
        "name": name,
        "version": int(version),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": src,
        "config": c.to_dict(),
        "preprocessing": {
            "layout": "NHWC, RGB",
            "resize": {"size": [c.image_size, c.image_size], "method": "bilinear", "half_pixel_centers": True,
                       "antialias": False},
            "scale": "x / 255",
            "mean": list(c.mean),
            "std": list(c.std),
            "formula": "(resize(x) / 255 - mean) / std",
        },
        "outputs": outputs,
        "heatmaps": heatmaps,
        "head": head_info,
        "parameters": {"count": int(n_params), "float32_bytes": 4 * int(n_params)},
        "tools": tool_versions(),
        "artifacts": {fmt: os.path.join(fmt, name, str(version)) for fmt in formats},
    }


def _output_specs(signature) -> dict:
    descriptions = {"embedding": "global-average-pooled backbone features",
                    "feature_map": "backbone feature map (h, w = image_size / output_stride)",
                    "heatmaps": "region attention per pixel over the K prototypes (sums to 1 over K)"}
    out = {}
    for n, spec in sorted(signature.structured_outputs.items(), key=lambda kv: (kv[0] not in BASE_OUTPUTS, kv[0])):
        out[n] = {"dtype": spec.dtype.name, "shape": spec.shape.as_list(),
                  "description": descriptions.get(n, "head output")}
    return out


def _place(tmp: str, final: str, overwrite: bool):
    """Rename `tmp` to `final`; with overwrite, the old version is moved aside first, then deleted."""
    old = None
    if os.path.exists(final):
        if not overwrite:
            raise ExportError(f"{final} appeared while exporting; not overwriting it")
        old = os.path.join(os.path.dirname(final), f".old-{os.path.basename(final)}-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if old is not None:
            os.rename(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


TRITON_CONFIG = """\
# Minimal Triton config written by fra_keras.export (never overwritten). Triton completes the inputs /
# outputs from model.onnx; versions are the numbered folders beside this file.
name: "{name}"
backend: "onnxruntime"
max_batch_size: 0
version_policy: {{ latest {{ num_versions: 1 }} }}
"""


def export_model(model, output_dir: str = DEFAULT_OUTPUT_DIR, name: str = DEFAULT_NAME,
                 version: Optional[int] = None, head=None, formats: Sequence[str] = FORMATS,
                 overwrite: bool = False, opset: int = ONNX_OPSET, saved_model_cli: bool = True,
                 log=print) -> ExportResult:
    """Export, verify and move into place. See the module docstring for the layout and signatures.

    Args:
      model: path to a model.keras / backbone.weights.h5 (config.json beside it) / exported SavedModel
        version folder, or an in-memory FRA model.
      head: None, a keras.Model taking the feature map (B, h, w, C), or a path to one (.keras).
      version: positive int; default `default_version()` (a timestamp).
      saved_model_cli: also run `saved_model_cli show --all` in the verification (a subprocess).
    Returns: `ExportResult`. Raises ExportError (bad request) or VerificationError (nothing written).
    """
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    version = default_version() if version is None else version
    paths = check_request(output_dir, name, version, formats, overwrite)
    check_onnx_tools(formats)
    if isinstance(model, str):
        kind = check_source_path(model)
        if kind == "savedmodel" and head is not None:
            raise ExportError("--head needs the Keras model (model.keras or backbone.weights.h5): a SavedModel "
                              "is re-exported as it is")
        if kind == "savedmodel" and os.path.abspath(model) == os.path.abspath(paths.get("savedmodel", "")):
            raise ExportError(f"--model {model!r} is the destination itself; choose another --name / --version")
    log = log or (lambda *a, **k: None)

    import tensorflow as tf

    head_model = load_head(head)
    source = load_source(model)
    head_names = check_head(head_model, source.config) if head_model is not None else []
    tmp_dirs = {}
    created: List[str] = []   # folders made by this export: removed again if it fails while empty
    cli = False
    finished = False
    try:
        # 1. SavedModel (also the source of the ONNX file) -----------------------------------------
        sm_parent = os.path.join(output_dir, "savedmodel", name)
        created += _make_dirs(sm_parent)
        tmp_sm = os.path.join(sm_parent, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
        tmp_dirs["savedmodel"] = tmp_sm
        if source.kind == "savedmodel":
            log(f"re-exporting {source.path}")
            shutil.copytree(source.path, tmp_sm, ignore=shutil.ignore_patterns(MANIFEST, "assets.extra"))
            inputs, reference, tol_key = load_reference(os.path.join(source.path, REFERENCE))
            n_params = source.manifest["parameters"]["count"]
            head_info = source.manifest.get("head")
        else:
            log(f"building the float32 serving graph from {source.path or 'the in-memory model'}")
            backbone, pixel_proj, prototypes = _float32_components(source)
            module = build_serving_module(source.config, backbone, pixel_proj, prototypes, head_model, head_names)
            tf.saved_model.save(module, tmp_sm, signatures=_signatures(module))
            n_params = backbone.count_params() + (pixel_proj.count_params() + prototypes.size if pixel_proj else 0)
            head_info = None
            if head_model is not None:
                n_params += head_model.count_params()
                head_info = {"path": os.path.abspath(head) if isinstance(head, str) else None,
                             "sha256": _sha256(head) if isinstance(head, str) else None,
                             "outputs": head_names, "input": "feature_map"}
            inputs = verification_inputs(source.config.image_size)
            reference = _reference_batches(source, inputs, head_model, head_names)
            tol_key = "float32" if source.config.precision == "float32" else "keras_mixed"
            save_reference(os.path.join(tmp_sm, REFERENCE), inputs, reference, tol_key)
        cli = start_saved_model_cli(tmp_sm) if saved_model_cli else False
        n_warm = write_warmup(tmp_sm, source.config, name)
        loaded = tf.saved_model.load(tmp_sm)
        outputs = _output_specs(loaded.signatures["serving_default"])
        input_specs = {}
        for sig, fn in loaded.signatures.items():
            _, kwargs = fn.structured_input_signature
            from fra_keras.serving import InputSpec

            input_specs[sig] = {n: InputSpec.from_tensor_spec(n, s).to_dict() for n, s in kwargs.items()}
        common = _manifest_common(source, name, version, outputs, head_info, n_params, output_dir, formats)
        sm_manifest = {"format": "savedmodel", **common, "signatures": input_specs,
                       "warmup": {"file": WARMUP.replace(os.sep, "/"), "requests": n_warm},
                       "serving": {"tensorflow_serving": "a TF Serving release built with TensorFlow >= "
                                   + tool_versions()["tensorflow"].rsplit(".", 1)[0]}}

        # 2. ONNX --------------------------------------------------------------------------------
        onnx_manifest = None
        if "onnx" in formats:
            onnx_parent = os.path.join(output_dir, "onnx", name)
            created += _make_dirs(onnx_parent)
            tmp_onnx = os.path.join(onnx_parent, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
            tmp_dirs["onnx"] = tmp_onnx
            os.makedirs(tmp_onnx)
            c = source.config
            meta = {"fra_keras.name": name, "fra_keras.version": str(version),
                    "input": "images: uint8 (batch, height, width, 3) RGB",
                    "outputs": ",".join(outputs), "image_size": str(c.image_size),
                    "mean": json.dumps(list(c.mean)), "std": json.dumps(list(c.std)),
                    "preprocessing": common["preprocessing"]["formula"] + " (inside the graph)",
                    "heatmaps": "included" if common["heatmaps"]["included"] else
                    "not included: " + common["heatmaps"]["reason"],
                    "backbone": c.backbone, "opset": str(opset),
                    "tensorflow": common["tools"]["tensorflow"], "tf2onnx": common["tools"]["tf2onnx"]}
            log(f"converting to ONNX (tf2onnx, opset {opset})")
            convert_to_onnx(tmp_sm, os.path.join(tmp_onnx, ONNX_FILE), opset, meta, version, loaded)
            shutil.copy2(os.path.join(tmp_sm, REFERENCE), os.path.join(tmp_onnx, REFERENCE))
            onnx_manifest = {"format": "onnx", **common,
                             "signatures": {"serving_default": input_specs["serving_default"]},
                             "onnx": {"file": ONNX_FILE, "opset": opset, "metadata_props": meta,
                                      "dynamic_dims": {"images": ["batch", "height", "width", 3]}}}

        for fmt, m in (("savedmodel", sm_manifest), ("onnx", onnx_manifest)):
            if m is not None:
                m["files"] = file_checksums(tmp_dirs[fmt])
                write_manifest(tmp_dirs[fmt], m)

        # 3. Verify (on the temporary folders, with the Keras reference computed now) ------------
        log("verifying")
        live = None if source.kind == "savedmodel" else reference
        report = verify_version(tmp_dirs["savedmodel"], tmp_dirs.get("onnx"), live, cli, loaded)
        summary = {"ok": True, "checks": report["checks"], "max_abs_diff": report["max_abs_diff"],
                   "tolerances": report["tolerances"], "batches": report["batches"],
                   "keras_reference": report["keras_reference"]}
        for fmt, m in (("savedmodel", sm_manifest), ("onnx", onnx_manifest)):
            if m is not None:
                m["verification"] = summary
                write_manifest(tmp_dirs[fmt], m)

        # 4. Move into place ----------------------------------------------------------------------
        for fmt in formats:
            _place(tmp_dirs[fmt], paths[fmt], overwrite)
            tmp_dirs.pop(fmt)
        if "onnx" in formats:
            triton = os.path.join(output_dir, "onnx", name, "config.pbtxt")
            if not os.path.exists(triton):
                atomic_write_text(triton, TRITON_CONFIG.format(name=name))
        for fmt in formats:
            log(f"wrote {paths[fmt]}")
        finished = True
        return ExportResult(name, int(version), paths, sm_manifest if "savedmodel" in formats else onnx_manifest,
                            report)
    finally:
        if isinstance(cli, subprocess.Popen) and cli.poll() is None:
            cli.kill()
            cli.communicate()
        for d in tmp_dirs.values():
            shutil.rmtree(d, ignore_errors=True)
        if not finished:
            _remove_empty(created)


# =============================================================================================
# Command line
# =============================================================================================
EPILOG = """\
verify:
  python -m fra_keras.export verify DIR [--model PATH [--head PATH]]
  re-checks every export under DIR (an output root, savedmodel/NAME, or a version folder): checksums,
  graph ops, saved_model_cli, onnx.checker, warm-up requests and the outputs of onnxruntime vs the
  SavedModel vs the Keras outputs stored at export (or recomputed from --model).

operational advice:
  * Serve with TF Serving: docker run -p 8501:8501 -v $PWD/DIR/savedmodel/NAME:/models/NAME
    -e MODEL_NAME=NAME tensorflow/serving (a release built with TF >= 2.21; see export/README.md).
  * The export resizes to the training image_size without antialiasing: send face crops close to
    that size (or resize them with antialiasing in the client) for training-like inputs.
  * Heatmaps need the full model.keras: a backbone.weights.h5 has no prototypes.
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m fra_keras.export",
        description="Export an FRA backbone (optionally with a downstream head) as a versioned SavedModel for "
                    "TF Serving and an ONNX file, and verify both.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="model.keras (full FRA: heatmaps included), backbone.weights.h5 (config.json beside "
                             "it), or an exported SavedModel version folder (re-export)")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help=f"output root (default {DEFAULT_OUTPUT_DIR})")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"model name (default {DEFAULT_NAME})")
    parser.add_argument("--version", type=int, default=None,
                        help="positive integer version (default: a UTC timestamp YYYYMMDDHHMMSS)")
    parser.add_argument("--head", default=None,
                        help="a .keras head taking the feature map (B, h, w, C); its outputs are added")
    parser.add_argument("--formats", default=",".join(FORMATS), help="savedmodel,onnx (default both)")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help=f"ONNX opset (default {ONNX_OPSET})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    return parser


def build_verify_parser():
    parser = argparse.ArgumentParser(prog="python -m fra_keras.export verify",
                                     description="Verify fra_keras exports under DIR.")
    parser.add_argument("dir", help="output root, savedmodel/NAME, onnx/NAME or a version folder")
    parser.add_argument("--model", default=None, help="recompute the Keras reference from this model")
    parser.add_argument("--head", default=None, help="with --model: the head that was exported")
    return parser


def _print_report(report: dict):
    for label, values in report.get("max_abs_diff", {}).items():
        parts = ", ".join(f"{k} {v:.2g}" for k, v in values.items())
        print(f"  max |diff| {label}: {parts}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "verify":
        args = build_verify_parser().parse_args(argv[1:])
        if not os.path.exists(args.dir):
            cli_utils.fail(f"DIR {args.dir!r} does not exist")
        try:
            if args.model is not None:
                check_source_path(args.model)
            cli_utils.quiet_tensorflow()
            results = verify(args.dir, model=args.model, head=args.head)
        except (ExportError, ConfigError, FileNotFoundError) as e:
            cli_utils.fail(str(e))
        except VerificationError as e:
            for p in e.problems:
                print(f"FAILED {p}", file=sys.stderr)
            return 1
        for r in results:
            where = ", ".join(d for d in (r["savedmodel"], r["onnx"]) if d)
            print(f"ok {r['name']}/{r['version']}: {where}")
            _print_report(r["report"])
        return 0

    args = build_parser().parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    try:
        version = default_version() if args.version is None else args.version
        check_request(args.output_dir, args.name, version, formats, args.overwrite)
        kind = check_source_path(args.model)
        if args.head is not None and (not os.path.isfile(args.head) or not args.head.endswith(".keras")):
            raise ExportError(f"--head {args.head!r} must be an existing .keras file")
        if kind == "savedmodel" and args.head is not None:
            raise ExportError("--head needs the Keras model (model.keras or backbone.weights.h5)")
        check_onnx_tools(formats)
    except ExportError as e:
        cli_utils.fail(str(e))
    cli_utils.quiet_tensorflow()
    start = time.time()
    try:
        result = export_model(args.model, args.output_dir, args.name, version, args.head, formats,
                              args.overwrite, args.opset)
    except (ExportError, ConfigError, FileNotFoundError) as e:
        cli_utils.fail(str(e))
    except VerificationError as e:
        for p in e.problems:
            print(f"FAILED {p}", file=sys.stderr)
        cli_utils.fail("verification failed; nothing was written", code=1)
    print(f"verified and written in {time.time() - start:.0f}s:")
    _print_report(result.report)
    return 0


def _first_line(e) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
