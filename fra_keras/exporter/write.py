"""`export_model`: build the float32 serving graph, save it (+ ONNX), write manifests and warm-up
requests, verify everything in temporary folders, and only then move the versions into place."""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Dict, List, Optional, Sequence

import tensorflow as tf

from fra_keras.config import atomic_write_text
from fra_keras.exporter import graph, layout, manifest as mf
from fra_keras.exporter.layout import (DEFAULT_NAME, DEFAULT_OUTPUT_DIR, FORMATS, MANIFEST, ONNX_FILE, ONNX_OPSET,
                                       REFERENCE, WARMUP, ExportError)
from fra_keras.exporter.onnx_file import convert_to_onnx, onnx_metadata
from fra_keras.exporter.reference import reference_batches, save_reference, verification_inputs
from fra_keras.exporter.source import Source, check_head, load_head, load_source
from fra_keras.exporter.verification import start_saved_model_cli, stop_saved_model_cli, verify_version
from fra_keras.exporter.warmup import write_warmup
from fra_keras.serving import InputSpec


@dataclasses.dataclass
class ExportResult:
    name: str
    version: int
    paths: Dict[str, str]          # format -> final folder
    manifest: dict                 # the SavedModel manifest (or ONNX when only ONNX was written)
    report: dict                   # verification report


def _check_model_request(model, head, paths: dict):
    """Cheap checks of a path `model` against `head` and the destination (before TensorFlow work)."""
    if not isinstance(model, str):
        return
    kind = layout.check_source_path(model)
    if kind == "savedmodel" and head is not None:
        raise ExportError("--head needs the Keras model (model.keras or backbone.weights.h5): a SavedModel "
                          "is re-exported as it is")
    if kind == "savedmodel" and os.path.abspath(model) == os.path.abspath(paths.get("savedmodel", "")):
        raise ExportError(f"--model {model!r} is the destination itself; choose another --name / --version")


def _save_savedmodel(source: Source, tmp_sm: str, head, head_model, head_names, log):
    """Write the SavedModel of `source` into `tmp_sm` with its verification.npz.

    Returns (Keras reference computed now or None, parameter count, head info for the manifest).
    """
    if source.kind == "savedmodel":
        log(f"re-exporting {source.path}")
        shutil.copytree(source.path, tmp_sm, ignore=shutil.ignore_patterns(MANIFEST, "assets.extra"))
        return None, source.manifest["parameters"]["count"], source.manifest.get("head")
    log(f"building the float32 serving graph from {source.path or 'the in-memory model'}")
    backbone, pixel_proj, prototypes = graph.float32_components(source)
    module = graph.build_serving_module(source.config, backbone, pixel_proj, prototypes, head_model, head_names)
    tf.saved_model.save(module, tmp_sm, signatures=graph.serving_signatures(module))
    n_params = backbone.count_params() + (pixel_proj.count_params() + prototypes.size if pixel_proj else 0)
    head_info = None
    if head_model is not None:
        n_params += head_model.count_params()
        head_info = {"path": os.path.abspath(head) if isinstance(head, str) else None,
                     "sha256": mf.sha256(head) if isinstance(head, str) else None,
                     "outputs": head_names, "input": "feature_map"}
    inputs = verification_inputs(source.config.image_size)
    reference = reference_batches(source, inputs, head_model, head_names)
    tol_key = "float32" if source.config.precision == "float32" else "keras_mixed"
    save_reference(os.path.join(tmp_sm, REFERENCE), inputs, reference, tol_key)
    return reference, n_params, head_info


def _input_specs(loaded) -> dict:
    """Signature -> input name -> InputSpec dict, for the manifest."""
    out = {}
    for sig, fn in loaded.signatures.items():
        _, kwargs = fn.structured_input_signature
        out[sig] = {n: InputSpec.from_tensor_spec(n, s).to_dict() for n, s in kwargs.items()}
    return out


def export_model(model, output_dir: str = DEFAULT_OUTPUT_DIR, name: str = DEFAULT_NAME,
                 version: Optional[int] = None, head=None, formats: Sequence[str] = FORMATS,
                 overwrite: bool = False, opset: int = ONNX_OPSET, saved_model_cli: bool = True,
                 log=print) -> ExportResult:
    """Export, verify and move into place (layout: `fra_keras.exporter.layout`; signatures:
    `fra_keras.exporter.graph`; checks: `fra_keras.exporter.verification`).

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
    version = layout.default_version() if version is None else version
    paths = layout.check_request(output_dir, name, version, formats, overwrite)
    layout.check_onnx_tools(formats)
    _check_model_request(model, head, paths)
    log = log or (lambda *a, **k: None)

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
        created += layout.make_dirs(sm_parent)
        tmp_dirs["savedmodel"] = tmp_sm = layout.temporary_dir(sm_parent, version)
        live, n_params, head_info = _save_savedmodel(source, tmp_sm, head, head_model, head_names, log)
        cli = start_saved_model_cli(tmp_sm) if saved_model_cli else False
        n_warm = write_warmup(tmp_sm, source.config, name)
        loaded = tf.saved_model.load(tmp_sm)
        outputs = mf.output_specs(loaded.signatures["serving_default"])
        input_specs = _input_specs(loaded)
        common = mf.manifest_common(source, name, version, outputs, head_info, n_params, formats)
        sm_manifest = {"format": "savedmodel", **common, "signatures": input_specs,
                       "warmup": {"file": WARMUP.replace(os.sep, "/"), "requests": n_warm},
                       "serving": {"tensorflow_serving": "a TF Serving release built with TensorFlow >= "
                                   + common["tools"]["tensorflow"].rsplit(".", 1)[0]}}

        # 2. ONNX --------------------------------------------------------------------------------
        onnx_manifest = None
        if "onnx" in formats:
            onnx_parent = os.path.join(output_dir, "onnx", name)
            created += layout.make_dirs(onnx_parent)
            tmp_dirs["onnx"] = tmp_onnx = layout.temporary_dir(onnx_parent, version)
            os.makedirs(tmp_onnx)
            meta = onnx_metadata(source.config, name, version, outputs, common, opset)
            log(f"converting to ONNX (tf2onnx, opset {opset})")
            convert_to_onnx(tmp_sm, os.path.join(tmp_onnx, ONNX_FILE), opset, meta, version, loaded)
            shutil.copy2(os.path.join(tmp_sm, REFERENCE), os.path.join(tmp_onnx, REFERENCE))
            onnx_manifest = {"format": "onnx", **common,
                             "signatures": {"serving_default": input_specs["serving_default"]},
                             "onnx": {"file": ONNX_FILE, "opset": opset, "metadata_props": meta,
                                      "dynamic_dims": {"images": ["batch", "height", "width", 3]}}}

        manifests = {fmt: m for fmt, m in (("savedmodel", sm_manifest), ("onnx", onnx_manifest)) if m is not None}
        for fmt, m in manifests.items():
            m["files"] = mf.file_checksums(tmp_dirs[fmt])
            mf.write_manifest(tmp_dirs[fmt], m)

        # 3. Verify (on the temporary folders, with the Keras reference computed now) ------------
        log("verifying")
        report = verify_version(tmp_dirs["savedmodel"], tmp_dirs.get("onnx"), live, cli, loaded)
        summary = {"ok": True, **{k: report[k] for k in ("checks", "max_abs_diff", "tolerances", "batches",
                                                         "keras_reference")}}
        for fmt, m in manifests.items():
            m["verification"] = summary
            mf.write_manifest(tmp_dirs[fmt], m)

        # 4. Move into place ----------------------------------------------------------------------
        for fmt in formats:
            layout.place(tmp_dirs[fmt], paths[fmt], overwrite)
            tmp_dirs.pop(fmt)
        if "onnx" in formats:
            triton = os.path.join(output_dir, "onnx", name, layout.TRITON_FILE)
            if not os.path.exists(triton):
                atomic_write_text(triton, layout.TRITON_CONFIG.format(name=name))
        for fmt in formats:
            log(f"wrote {paths[fmt]}")
        finished = True
        return ExportResult(name, int(version), paths, sm_manifest if "savedmodel" in formats else onnx_manifest,
                            report)
    finally:
        stop_saved_model_cli(cli)
        for d in tmp_dirs.values():
            shutil.rmtree(d, ignore_errors=True)
        if not finished:
            layout.remove_empty(created)
