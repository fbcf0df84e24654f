"""`python -m fra_keras.export`: versioned SavedModel (TF Serving) + ONNX (onnxruntime / Triton), verified.

Commands::

    python -m fra_keras.export --model runs/X/model.keras --name fra --version 1
    python -m fra_keras.export --model runs/X/backbone.weights.h5 --head heads/expr.keras --name fra-expr
    python -m fra_keras.export --model export/models/savedmodel/fra/1 --name fra --version 2  # re-export
    python -m fra_keras.export verify export/models            # re-check every export under a folder

This module is the command's entry point and keeps the names code already imports from it
(`from fra_keras.export import export_model`, `export.verify`, ...): each is the object of the same
name in the `fra_keras.exporter` package, which holds the code, one module per concern (its
docstring lists them; docs/export.md describes the layout, signatures and checks).
"""

import sys

from fra_keras import exporter

__all__ = exporter.__all__


def __getattr__(name):
    # Resolved on first use: `import fra_keras.export` and `--help` load no TensorFlow.
    return getattr(exporter, name)


def __dir__():
    return sorted(set(globals()) | set(__all__))


if __name__ == "__main__":
    from fra_keras.exporter.cli import main

    sys.exit(main())
