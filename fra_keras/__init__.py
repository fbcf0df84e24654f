"""fra-keras: FRA (Gao & Patras, CVPR 2024) facial representation learning in TensorFlow / Keras 3.

Public API (imported lazily so that the command-line tools can silence TensorFlow before it loads)::

    import fra_keras
    model = fra_keras.FRA.from_preset("tiny")
    config = fra_keras.FRAConfig.from_preset("paper")
    backbone = fra_keras.build_backbone(config)
"""

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_LAZY = {
    "FRAConfig": ("fra_keras.config", "FRAConfig"),
    "ConfigError": ("fra_keras.config", "ConfigError"),
    "PRESETS": ("fra_keras.config", "PRESETS"),
    "presets": ("fra_keras.config", "PRESETS"),
    "FRA": ("fra_keras.models.fra", "FRA"),
    "build_backbone": ("fra_keras.models.backbone", "build_backbone"),
    "load_backbone": ("fra_keras.models.backbone", "load_backbone"),
    "losses": ("fra_keras.losses", None),
    "data": ("fra_keras.data", None),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'fra_keras' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value
