"""manifest.json of an export version: what it is, how to feed it, the tools, and every file's sha256.

Also `find_versions`, which finds export versions under a folder by their manifests. No TensorFlow.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
from importlib import metadata
from typing import Dict, List

import fra_keras
from fra_keras.config import atomic_write_text
from fra_keras.exporter.layout import BASE_OUTPUTS, FORMATS, MANIFEST, ExportError

#: The distributions whose versions every manifest records.
TOOLS = ("tensorflow", "keras", "numpy", "protobuf", "tf2onnx", "onnx", "onnxruntime", "tensorflow-serving-api")
OUTPUT_DESCRIPTIONS = {"embedding": "global-average-pooled backbone features",
                       "feature_map": "backbone feature map (h, w = image_size / output_stride)",
                       "heatmaps": "region attention per pixel over the K prototypes (sums to 1 over K)"}


def sha256(path: str) -> str:
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
                out[rel] = sha256(full)
    return dict(sorted(out.items()))


def check_checksums(folder: str, manifest: dict) -> List[str]:
    """One line per file that is missing, unlisted or changed since the manifest was written."""
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
    out = {"python": sys.version.split()[0], "fra_keras": fra_keras.__version__}
    for dist in TOOLS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def output_specs(signature) -> dict:
    """dtype, shape and description of each output of a loaded signature (base outputs first)."""
    out = {}
    for n, spec in sorted(signature.structured_outputs.items(), key=lambda kv: (kv[0] not in BASE_OUTPUTS, kv[0])):
        out[n] = {"dtype": spec.dtype.name, "shape": spec.shape.as_list(),
                  "description": OUTPUT_DESCRIPTIONS.get(n, "head output")}
    return out


def manifest_common(source, name: str, version: int, outputs: dict, head_info, n_params: int,
                    formats) -> dict:
    """The fields both formats' manifests share; `source` is an `exporter.source.Source`."""
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
