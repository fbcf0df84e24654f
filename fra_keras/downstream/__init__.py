"""Downstream evaluation: task heads on a backbone, metrics, region awareness, model loading.

    from fra_keras.downstream import ExpressionClassifier, load_feature_extractor, metrics

Modules: `heads` (feature map -> dict heads, `SoftArgmax2D`), `models` (task models, linear / fine-tune,
optimiser), `metrics` (pure NumPy), `regions` (heatmap region-awareness metrics), `loading`
(`load_feature_extractor`), `data` (`--data` specs), `plots` (heatmap pictures), `tasks` (the task
runners: features, probes, fine-tuning, k-NN, regions, scoring). The command line is
`python -m fra_keras.evaluate`.

Names are resolved lazily so that importing this package does not load TensorFlow. Loading a saved
landmark head (`SoftArgmax2D`) or a downstream `.keras` model needs the classes registered first:
`import fra_keras.downstream.models` (which imports `heads`).
"""

import importlib

_LAZY = {
    "ExpressionClassifier": "fra_keras.downstream.models",
    "AttributeClassifier": "fra_keras.downstream.models",
    "LandmarkRegressor": "fra_keras.downstream.models",
    "DownstreamModel": "fra_keras.downstream.models",
    "TASK_MODELS": "fra_keras.downstream.models",
    "downstream_optimizer": "fra_keras.downstream.models",
    "WarmupHalfCosine": "fra_keras.downstream.models",
    "SoftArgmax2D": "fra_keras.downstream.heads",
    "build_expression_head": "fra_keras.downstream.heads",
    "build_attribute_head": "fra_keras.downstream.heads",
    "build_landmark_head": "fra_keras.downstream.heads",
    "load_feature_extractor": "fra_keras.downstream.loading",
    "FeatureExtractor": "fra_keras.downstream.loading",
    "ModelLoadError": "fra_keras.downstream.loading",
}
_MODULES = ("heads", "models", "metrics", "regions", "loading", "data", "plots", "tasks")

__all__ = sorted(_LAZY) + list(_MODULES)


def __getattr__(name):
    if name in _MODULES:
        value = importlib.import_module(f"fra_keras.downstream.{name}")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'fra_keras.downstream' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
