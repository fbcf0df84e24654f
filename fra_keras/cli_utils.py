"""Shared pieces of the command-line tools: quiet TensorFlow start-up, config flags, one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import typing

from fra_keras.config import FRAConfig


def quiet_tensorflow():
    """Import TensorFlow without its start-up noise (CUDA / oneDNN notices, absl pre-init lines).

    The C++ notices are printed during `import tensorflow` straight to file descriptor 2, before any
    Python logging applies, so stderr is pointed at /dev/null for the import only.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if "tensorflow" not in sys.modules:
        with _silenced_stderr():
            import tensorflow

            # Device discovery prints "failed call to cuInit" on machines without a GPU driver.
            tensorflow.config.list_physical_devices()
    import logging
    import warnings

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    return tf


@contextlib.contextmanager
def _silenced_stderr():
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # e.g. pytest capture, notebooks
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


# Config fields as flags ------------------------------------------------------------------------
def _field_parser(annotation: str):
    """A string -> value parser for a FRAConfig field annotation (postponed-evaluation strings)."""
    ann = annotation.replace("typing.", "").replace(" ", "")
    optional = ann.startswith("Optional[")
    if optional:
        ann = ann[len("Optional["):-1]
    if ann.startswith("Tuple["):
        inner = ann[len("Tuple["):-1].split(",")
        cast = float if inner[0] == "float" else int

        def parse_tuple(text):
            parts = [p for p in text.replace(" ", "").split(",") if p]
            if len(parts) != len(inner):
                raise argparse.ArgumentTypeError(f"expected {len(inner)} comma-separated numbers, got {text!r}")
            return tuple(cast(p) for p in parts)
        base = parse_tuple
    elif ann == "bool":
        def base(text):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
    else:
        base = {"int": int, "float": float, "str": str}[ann]
    if not optional:
        return base

    def parse_optional(text):
        return None if text.lower() in ("none", "null", "") else base(text)
    return parse_optional


FIELD_HELP = {
    "backbone": "ResNet depth: resnet18 | resnet34 | resnet50 | resnet101",
    "image_size": "training resolution; ResNet-50 at stride 32 gives a 7x7 heatmap grid at 224, 4x4 at 128",
    "batch_size": "GLOBAL batch size, split across replicas (paper: 512 on 8 GPUs)",
    "epochs": "epochs to train (schedules are planned over epochs * steps_per_epoch)",
    "steps_per_epoch": "optimiser steps per epoch; default: images // batch_size for a folder",
    "data_dir": "folder of face images (any nesting, jpg/png) or of TFRecord shards; default: synthetic faces",
    "learning_rate": "peak learning rate after warm-up (paper: LARS 0.9 at batch 512, not scaled with batch)",
    "precision": "float32 | mixed_float16 (with loss scaling) | mixed_bfloat16",
    "strategy": "auto | default | mirrored | multi-worker | tpu",
    "jit_compile": "XLA: auto (on for GPU/TPU, off on CPU where it is slower) | true | false",
    "num_regions": "K, the number of facial regions / mask embeddings (paper: 8)",
    "output_stride": "32 (paper), or 16 / 8 through dilation for a finer heatmap grid at small sizes",
    "region_losses": "false trains plain BYOL (global loss only): the ablation baseline",
}


def add_config_flags(parser: argparse.ArgumentParser):
    """One `--field-name` flag per FRAConfig field; unset flags stay absent (argparse.SUPPRESS)."""
    group = parser.add_argument_group("FRAConfig fields (override the preset; see fra_keras/config.py)")
    hints = typing.get_type_hints(FRAConfig)
    for field in dataclasses.fields(FRAConfig):
        if field.name == "preset":
            continue
        annotation = field.type if isinstance(field.type, str) else repr(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        help_text = FIELD_HELP.get(field.name, "")
        help_text = f"{help_text} (paper default: {default!r})" if help_text else f"paper default: {default!r}"
        group.add_argument(flag, dest=field.name, type=_field_parser(annotation), default=argparse.SUPPRESS,
                           metavar=field.name.upper(), help=help_text)


def config_overrides(args: argparse.Namespace) -> dict:
    """The FRAConfig fields that were given on the command line."""
    names = {f.name for f in dataclasses.fields(FRAConfig)}
    return {k: v for k, v in vars(args).items() if k in names}


def progress_verbosity(verbose=None, stream=None) -> int:
    """Keras `verbose` for `fit`: as given, else 1 (progress bar) on a terminal and 2 (one line per
    epoch) when the output goes to a file or a pipe, where the bar's carriage returns would pile up."""
    if verbose is not None:
        return verbose
    stream = sys.stdout if stream is None else stream
    try:
        return 1 if stream.isatty() else 2
    except (AttributeError, ValueError):  # closed or unusual streams
        return 2


def fail(message: str, code: int = 2):
    """Print a one-line error for the user and exit (no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
