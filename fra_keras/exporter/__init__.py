"""The exporter: versioned SavedModel (TF Serving) + ONNX (onnxruntime / Triton), verified.

Run it as `python -m fra_keras.export` (the entry module `fra_keras/export.py`); this package holds
the code, one module per concern. It is called `exporter` so that it is not confused with the
top-level `export/` folder, which holds the serving side (clients, TF Serving config, TFX module).

=================  =========================================================================
module             concern
=================  =========================================================================
``layout``         names, folders, versions, errors; the up-front checks (no TensorFlow)
``source``         what is exported: model.keras / backbone.weights.h5 / SavedModel, the head
``graph``          the float32 serving graph and its three signatures
``reference``      verification batches, Keras reference outputs, verification.npz
``warmup``         TF Serving warm-up requests
``onnx_file``      tf2onnx conversion, metadata and checks of model.onnx
``manifest``       manifest.json, checksums, tool versions, finding export versions
``tolerance``      how close Keras / SavedModel / ONNX outputs must be, and the comparison
``verification``   `verify_saved_model`, `verify_version`, `verify` (graph scan, saved_model_cli)
``write``          `export_model`: build, verify in temporary folders, move into place
``cli``            the command line
=================  =========================================================================

Every public name of those modules is also an attribute of this package (and of
`fra_keras.export`), imported on first use so that `import fra_keras.exporter` loads no TensorFlow.
Layout, signatures and checks: docs/export.md.
"""

import importlib

#: Module -> the public names it defines (a test checks that each exists there).
PUBLIC = {
    "layout": ("ONNX_OPSET", "DEFAULT_OUTPUT_DIR", "DEFAULT_NAME", "FORMATS", "SIGNATURES", "TF_EXAMPLE_IMAGE_KEY",
               "BASE_OUTPUTS", "MANIFEST", "REFERENCE", "WARMUP", "ONNX_FILE", "TRITON_CONFIG", "ONNX_TOOLS",
               "ExportError", "VerificationError", "check_source_path", "check_head_path", "default_version",
               "check_request", "check_onnx_tools"),
    "tolerance": ("Tolerance", "TOLERANCES", "float32_tolerance", "tolerance_for", "compare_outputs"),
    "manifest": ("file_checksums", "check_checksums", "read_manifest", "write_manifest", "tool_versions",
                 "find_versions"),
    "source": ("Source", "load_source", "load_head", "head_output_names", "check_head"),
    "graph": ("MODULE_FUNCTIONS", "float32_components", "build_serving_module", "serving_signatures"),
    "reference": ("VERIFY_SEED", "verification_inputs", "keras_reference", "reference_batches", "save_reference",
                  "load_reference"),
    "warmup": ("prediction_log_bytes", "warmup_requests", "write_warmup", "read_warmup"),
    "onnx_file": ("convert_to_onnx",),
    "verification": ("FORBIDDEN_OPS", "scan_graph_ops", "start_saved_model_cli", "finish_saved_model_cli",
               "saved_model_cli_show", "verify_saved_model", "verify_version", "verify"),
    "write": ("ExportResult", "export_model"),
    "cli": ("build_parser", "build_verify_parser", "main"),
}
_MODULE_OF = {name: module for module, names in PUBLIC.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF))
