"""The command line: `python -m fra_keras.export [verify] ...` (entry module `fra_keras/export.py`).

Every mistake that needs no TensorFlow (names, versions, formats, paths, missing ONNX tools) is
reported in one line before TensorFlow loads; the modules that need it are imported in `_tools`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from fra_keras import cli_utils
from fra_keras.config import ConfigError
from fra_keras.exporter.layout import (DEFAULT_NAME, DEFAULT_OUTPUT_DIR, FORMATS, ONNX_OPSET, ExportError,
                                       VerificationError, check_head_path, check_onnx_tools, check_request,
                                       check_source_path, default_version)

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


def _tools():
    """(export_model, verify), imported once the cheap checks passed: they load TensorFlow, which is
    silenced first."""
    cli_utils.quiet_tensorflow()
    from fra_keras.exporter.verification import verify
    from fra_keras.exporter.write import export_model

    return export_model, verify


def _print_report(report: dict):
    for label, values in report.get("max_abs_diff", {}).items():
        parts = ", ".join(f"{k} {v:.2g}" for k, v in values.items())
        print(f"  max |diff| {label}: {parts}")


def _print_problems(error: VerificationError):
    for p in error.problems:
        print(f"FAILED {p}", file=sys.stderr)


def _main_verify(argv) -> int:
    args = build_verify_parser().parse_args(argv)
    if not os.path.exists(args.dir):
        cli_utils.fail(f"DIR {args.dir!r} does not exist")
    try:
        if args.model is not None:
            check_source_path(args.model)
        _, verify = _tools()
        results = verify(args.dir, model=args.model, head=args.head)
    except (ExportError, ConfigError, FileNotFoundError) as e:
        cli_utils.fail(str(e))
    except VerificationError as e:
        _print_problems(e)
        return 1
    for r in results:
        where = ", ".join(d for d in (r["savedmodel"], r["onnx"]) if d)
        print(f"ok {r['name']}/{r['version']}: {where}")
        _print_report(r["report"])
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "verify":
        return _main_verify(argv[1:])
    args = build_parser().parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    try:
        version = default_version() if args.version is None else args.version
        check_request(args.output_dir, args.name, version, formats, args.overwrite)
        kind = check_source_path(args.model)
        check_head_path(args.head)
        if kind == "savedmodel" and args.head is not None:
            raise ExportError("--head needs the Keras model (model.keras or backbone.weights.h5)")
        check_onnx_tools(formats)
    except ExportError as e:
        cli_utils.fail(str(e))
    export_model, _ = _tools()
    start = time.time()
    try:
        result = export_model(args.model, args.output_dir, args.name, version, args.head, formats,
                              args.overwrite, args.opset)
    except (ExportError, ConfigError, FileNotFoundError) as e:
        cli_utils.fail(str(e))
    except VerificationError as e:
        _print_problems(e)
        cli_utils.fail("verification failed; nothing was written", code=1)
    print(f"verified and written in {time.time() - start:.0f}s:")
    _print_report(result.report)
    return 0
