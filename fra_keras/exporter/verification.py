"""Verification of exports: every export before it is moved into place, and `verify` later.

Checks: checksums, no PyFunc / XLA-only ops, `tf.saved_model.load`, `saved_model_cli show --all`,
`onnx.checker`, the warm-up requests, and the outputs of onnxruntime vs the SavedModel vs the Keras
model on the same batches (1 and 4 images at image_size, 2 images at another size) within
`float32_tolerance(config)` (`TOLERANCES["keras_mixed"]` for the Keras reference of a mixed-precision
model). `verify_saved_model` is the SavedModel part on its own, for any signature map (the TFX serving
model has other signature names).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from fra_keras.config import FRAConfig
from fra_keras.exporter.layout import (BASE_OUTPUTS, MANIFEST, REFERENCE, SIGNATURES, WARMUP, ExportError,
                                       VerificationError, first_line)
from fra_keras.exporter.manifest import check_checksums, find_versions, read_manifest
from fra_keras.exporter.onnx_file import check_onnx
from fra_keras.exporter.reference import load_reference, reference_batches, verification_batches
from fra_keras.exporter.source import load_head, load_source
from fra_keras.exporter.tolerance import Tolerance, compare_outputs, float32_tolerance, tolerance_for
from fra_keras.exporter.warmup import read_warmup
from fra_keras.serving import Predictor, ServingError, build_tf_example

FORBIDDEN_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
#: The comparison labels of the fra_keras export's signatures in reports ("savedmodel_vs_keras", ...);
#: other signatures are labelled by their own name ("serve_images_vs_keras", ...).
EXPORT_LABELS = {"serving_default": "savedmodel", "serve_image_bytes": "image_bytes",
                 "serve_tf_example": "tf_example"}


def scan_graph_ops(saved_model_dir: str) -> List[str]:
    """Problems in a SavedModel graph: Python-function ops (PyFunc, EagerPyFunc: need the Python
    interpreter, TF Serving cannot run them) and XLA-only ops / must-compile functions."""
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


def stop_saved_model_cli(cli):
    """Kill a `start_saved_model_cli` process that is still running (anything else: nothing)."""
    if isinstance(cli, subprocess.Popen) and cli.poll() is None:
        cli.kill()
        cli.communicate()


@dataclasses.dataclass
class _Check:
    """One SavedModel verification: what is compared, and what has been found so far."""

    batches: dict
    keras_ref: dict
    names: Sequence[str]
    keras_tol: Tolerance
    tight: Tolerance
    report: dict
    diffs: dict
    problems: List[str]

    def finish(self) -> dict:
        """The report, or VerificationError listing every problem found."""
        self.report["max_abs_diff"] = self.diffs
        self.report["batches"] = {k: list(v.shape) for k, v in self.batches.items()}
        self.report["ok"] = not self.problems
        if self.problems:
            raise VerificationError(self.problems, self.report)
        return self.report


def _image_inputs(input_name: str, pngs: list):
    """The batch of 4 verification images, encoded for a signature taking `input_name`."""
    if input_name == "image_bytes":
        return np.array(pngs, dtype=object)
    if input_name == "examples":
        return np.array([build_tf_example(p) for p in pngs], dtype=object)
    return None


def _check_saved_model(sm_dir, check: _Check, signatures: Mapping[str, str], labels: Mapping[str, str], cli,
                       loaded) -> dict:
    """The SavedModel checks (module docstring); returns the images signature's outputs per batch."""
    problems, report = check.problems, check.report
    problems += scan_graph_ops(sm_dir)
    report["checks"].append("graph ops (no PyFunc / XLA-only)")
    try:
        loaded = loaded if loaded is not None else tf.saved_model.load(sm_dir)
    except Exception as e:
        raise VerificationError(problems + [f"tf.saved_model.load failed: {first_line(e)}"], report) from None
    report["checks"].append("tf.saved_model.load")
    if sorted(loaded.signatures) != sorted(signatures):
        problems.append(f"signatures {sorted(loaded.signatures)} != {sorted(signatures)}")
    predictor = Predictor(loaded)
    for sig, input_name in signatures.items():
        if sig in predictor.signatures and list(predictor.signatures[sig]) != [input_name]:
            problems.append(f"{sig}: inputs {list(predictor.signatures[sig])}, expected [{input_name!r}]")
        if sig in loaded.signatures:
            outs = sorted(loaded.signatures[sig].structured_outputs)
            if outs != sorted(check.names):
                problems.append(f"{sig}: outputs {outs} differ from the manifest's {sorted(check.names)}")
    if isinstance(cli, subprocess.Popen):
        text = finish_saved_model_cli(cli)
        for sig, input_name in signatures.items():
            if f"signature_def['{sig}']" not in text or f"inputs['{input_name}']" not in text:
                problems.append(f"saved_model_cli show --all does not list {sig}({input_name})")
        report["checks"].append("saved_model_cli show --all")
    image_sigs = [sig for sig, input_name in signatures.items() if input_name == "images"]
    if not image_sigs:
        problems.append(f"no signature takes 'images' among {dict(signatures)}")
    if problems:
        raise VerificationError(problems, report)
    image_sig = image_sigs[0]
    outputs = {}
    try:
        for batch, images in check.batches.items():
            outputs[batch] = predictor.predict({"images": images}, image_sig)
            compare_outputs(outputs[batch], check.keras_ref[batch], check.names, check.keras_tol,
                            f"{labels.get(image_sig, image_sig)}_vs_keras", check.diffs, problems)
        pngs = [tf.io.encode_png(im).numpy() for im in check.batches["b4"]]
        for sig, input_name in signatures.items():
            if sig == image_sig:
                continue
            value = _image_inputs(input_name, pngs)
            if value is None:
                problems.append(f"{sig}: cannot build verification inputs for {input_name!r}")
                continue
            compare_outputs(predictor.predict({input_name: value}, sig), outputs["b4"], check.names, check.tight,
                            f"{labels.get(sig, sig)}_vs_images", check.diffs, problems)
        report["checks"].append(" / ".join(signatures) + " outputs")
        warm = None
        if not os.path.isfile(os.path.join(sm_dir, WARMUP)):
            problems.append(f"{WARMUP} is missing")
        else:
            try:
                warm = read_warmup(sm_dir)
            except ImportError:  # tensorflow-serving-api not installed: the file is there, not replayed
                report["checks"].append("warm-up file present (install tensorflow-serving-api to replay it)")
        if warm is not None:
            for request in warm:
                predictor.handle_grpc(request)
            seen = sorted(request.model_spec.signature_name for request in warm)
            if seen != sorted(signatures):
                problems.append(f"{WARMUP}: requests for {seen}, expected one for each of {sorted(signatures)}")
            report["checks"].append(f"{len(warm)} warm-up requests replayed through the gRPC contract")
    except ServingError as e:
        problems.append(f"SavedModel rejected a verification request: {e}")
    return outputs


def _tolerances(config: FRAConfig, tolerance_key: str, report: dict):
    keras_tol = tolerance_for(tolerance_key, config)
    tight = float32_tolerance(config)
    report["tolerances"] = {"keras": dataclasses.asdict(keras_tol), "export": dataclasses.asdict(tight)}
    return keras_tol, tight


def verify_saved_model(saved_model_dir: str, inputs: dict, reference: dict, config: FRAConfig,
                       outputs: Sequence[str], *, tolerance_key: str = "float32",
                       signatures: Mapping[str, str] = SIGNATURES, labels: Optional[Mapping[str, str]] = None,
                       saved_model_cli=False, loaded=None) -> dict:
    """Verify one SavedModel folder against a Keras reference; raise VerificationError listing every
    problem, else return the report (checks, max abs differences per comparison, tolerances).

    Args:
      inputs, reference, tolerance_key: as `load_reference` returns them from a verification.npz:
        the uint8 batches, the Keras outputs per batch (b1, b4, odd) and "float32" / "keras_mixed".
      config: the model's FRAConfig (tolerances). outputs: the output names every signature returns.
      signatures: signature name -> input name ("images", "image_bytes" or "examples"); the first
        taking "images" is compared with the reference, every other one with it on PNGs of b4.
      labels: signature -> label in the report (default: the signature's name).
      saved_model_cli: True (run `saved_model_cli show --all`), False, or a running
        `start_saved_model_cli` process. loaded: the SavedModel, if already loaded.
    """
    report: Dict[str, Any] = {"checks": []}
    keras_tol, tight = _tolerances(config, tolerance_key, report)
    check = _Check(batches=verification_batches(inputs), keras_ref=reference, names=list(outputs),
                   keras_tol=keras_tol, tight=tight, report=report, diffs={}, problems=[])
    cli = start_saved_model_cli(saved_model_dir) if saved_model_cli is True else saved_model_cli
    try:
        _check_saved_model(saved_model_dir, check, signatures, labels or {}, cli, loaded)
    finally:
        stop_saved_model_cli(cli)
    return check.finish()


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
        stop_saved_model_cli(cli)


def _verify_version(sm_dir, onnx_dir, reference, cli, loaded) -> dict:
    report: Dict[str, Any] = {"checks": []}
    folder = sm_dir or onnx_dir
    manifest = read_manifest(folder)
    problems = [f"{os.path.basename(os.path.dirname(d))}/{os.path.basename(d)}: {p}"
                for d in filter(None, (sm_dir, onnx_dir)) for p in check_checksums(d, read_manifest(d))]
    if problems:  # the files are not what was verified at export: nothing else is meaningful
        raise VerificationError(problems, report)
    report["checks"].append("checksums")
    inputs, stored, tol_key = load_reference(os.path.join(folder, REFERENCE))
    report["keras_reference"] = "computed now" if reference else f"stored at export ({REFERENCE})"
    keras_tol, tight = _tolerances(FRAConfig.from_dict(manifest["config"]), tol_key, report)
    check = _Check(batches=verification_batches(inputs), keras_ref=reference or stored,
                   names=list(manifest["outputs"]), keras_tol=keras_tol, tight=tight, report=report, diffs={},
                   problems=problems)
    sm_out = _check_saved_model(sm_dir, check, SIGNATURES, EXPORT_LABELS, cli, loaded) if sm_dir else {}
    if onnx_dir is not None:
        check_onnx(onnx_dir, check.names, check.batches, check.keras_ref, check.keras_tol, check.tight, sm_out,
                   report, check.diffs, problems)
    return check.finish()


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
            reference = reference_batches(source, inputs, head_model, names)
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
