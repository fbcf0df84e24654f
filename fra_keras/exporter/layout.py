"""Names, folders and up-front checks of an export (no TensorFlow: the command line runs these first).

    OUTPUT_DIR/savedmodel/NAME/VERSION/   saved_model.pb, variables/, assets.extra/, manifest.json,
                                          verification.npz    (TF Serving model base path: savedmodel/NAME)
    OUTPUT_DIR/onnx/NAME/VERSION/         model.onnx, manifest.json, verification.npz
    OUTPUT_DIR/onnx/NAME/config.pbtxt     a minimal Triton config (written once, never overwritten)

Each version is written to a hidden temporary folder beside its final place (`.tmp-...`, which TF
Serving and Triton ignore) and renamed into place (`place`); an existing version is never replaced
unless asked (`check_request`).
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import re
import shutil
import uuid
from typing import List, Optional, Sequence

from fra_keras import serving

ONNX_OPSET = 17
DEFAULT_OUTPUT_DIR = os.path.join("export", "models")
DEFAULT_NAME = "fra"
FORMATS = ("savedmodel", "onnx")
#: Signature name -> its input name: the serving contract of `fra_keras.serving`.
SIGNATURES = serving.SIGNATURE_INPUTS
TF_EXAMPLE_IMAGE_KEY = serving.TF_EXAMPLE_IMAGE_KEY
BASE_OUTPUTS = ("embedding", "feature_map", "heatmaps")
MANIFEST = "manifest.json"
REFERENCE = "verification.npz"
WARMUP = os.path.join("assets.extra", "tf_serving_warmup_requests")
ONNX_FILE = "model.onnx"
TRITON_FILE = "config.pbtxt"
TRITON_CONFIG = """\
# Minimal Triton config written by fra_keras.export (never overwritten). Triton completes the inputs /
# outputs from model.onnx; versions are the numbered folders beside this file.
name: "{name}"
backend: "onnxruntime"
max_batch_size: 0
version_policy: {{ latest {{ num_versions: 1 }} }}
"""
#: What `--formats onnx` needs (import name -> pip name); all three come with the `onnx` extra.
ONNX_TOOLS = {"onnx": "onnx", "tf2onnx": "tf2onnx", "onnxruntime": "onnxruntime"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ExportError(ValueError):
    """Bad export request (paths, names, versions, heads); the message names the argument and value."""


class VerificationError(RuntimeError):
    """An export failed its checks; `problems` lists each failed check in one line."""

    def __init__(self, problems: Sequence[str], report: Optional[dict] = None):
        self.problems = list(problems)
        self.report = report
        super().__init__("; ".join(self.problems))


def first_line(e) -> str:
    """The first line of an exception's message (or its type name): for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def is_savedmodel_dir(path: str) -> bool:
    return os.path.isdir(path) and (os.path.isfile(os.path.join(path, "saved_model.pb"))
                                    or os.path.isfile(os.path.join(path, "saved_model.pbtxt")))


def check_source_path(path: str) -> str:
    """Cheap checks before TensorFlow loads: the kind of `path` ("keras" | "weights" | "savedmodel")."""
    if not isinstance(path, str) or not path:
        raise ExportError(f"--model {path!r}: give a model.keras, a backbone.weights.h5 or an exported SavedModel")
    if not os.path.exists(path):
        raise ExportError(f"--model {path!r} does not exist")
    if os.path.isdir(path):
        if not is_savedmodel_dir(path):
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


def check_head_path(head) -> None:
    """A head given as a path must be an existing .keras file."""
    if isinstance(head, str) and (not os.path.isfile(head) or not head.endswith(".keras")):
        raise ExportError(f"--head {head!r} must be an existing .keras file")


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


def check_onnx_tools(formats: Sequence[str]):
    """Raise ExportError naming the missing packages when "onnx" is among `formats` and the ONNX tools
    are not installed (checked without importing them, so it is instant and comes before any work)."""
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


def temporary_dir(parent: str, version) -> str:
    """A hidden, unique folder name beside the final version folder (`.tmp-VERSION-xxxxxxxx`)."""
    return os.path.join(parent, f".tmp-{version}-{uuid.uuid4().hex[:8]}")


def make_dirs(path: str) -> List[str]:
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


def remove_empty(folders: Sequence[str]):
    """Remove the folders this export created that are still empty (deepest first)."""
    for folder in sorted(set(folders), key=len, reverse=True):
        try:
            os.rmdir(folder)
        except OSError:   # not empty (something else lives there now) or already gone
            pass


def place(tmp: str, final: str, overwrite: bool):
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
