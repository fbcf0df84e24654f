"""fra-keras: FRA (Gao & Patras, CVPR 2024) facial representation learning in TensorFlow / Keras 3.

Public API (imported lazily so that the command-line tools can silence TensorFlow before it loads)::

    import fra_keras
    model = fra_keras.FRA.from_preset("tiny")
    config = fra_keras.FRAConfig.from_preset("paper")
    backbone = fra_keras.build_backbone(config)
    x = fra_keras.normalize_images(images_uint8, config.mean, config.std)   # the models' input

`import fra_keras` alone is enough for `keras.saving.load_model("run/model.keras")`: every Keras-
serializable class of the package is registered as soon as Keras is (or already was) imported, without
making `import fra_keras` itself import TensorFlow (see `_register_serializables`).
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings

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
    "normalize_images": ("fra_keras.preprocessing", "normalize_images"),
    "preprocessing": ("fra_keras.preprocessing", None),
    "losses": ("fra_keras.losses", None),
    "data": ("fra_keras.data", None),
    "monitor": ("fra_keras.monitor", None),
}

__all__ = sorted(_LAZY)

#: Every module holding a `@keras.saving.register_keras_serializable` class (a test checks the list).
SERIALIZABLE_MODULES = (
    "fra_keras.optimizers",
    "fra_keras.models.normalization",
    "fra_keras.models.backbone",
    "fra_keras.models.heads",
    "fra_keras.models.mask_decoder",
    "fra_keras.models.neck",
    "fra_keras.models.fra",
    "fra_keras.downstream.heads",
    "fra_keras.downstream.models",
)

# Keras and TensorFlow import each other; registration waits until neither is half-imported.
_HOOKED = ("keras", "tensorflow")
_registered = False


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'fra_keras' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def _initializing(name: str) -> bool:
    """True while module `name` is being executed by the import system."""
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _register_serializables():
    """Import every module of SERIALIZABLE_MODULES, which registers its classes with Keras.

    Modules in the middle of their own import are skipped: they register themselves when they finish.
    A failure is a warning, never an error, because this can run inside somebody's `import keras`.
    """
    global _registered
    if _registered:
        return
    _registered = True
    for name in SERIALIZABLE_MODULES:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - never break the user's import of Keras
            warnings.warn(f"fra_keras: could not register the Keras classes of {name}: {e}", stacklevel=2)


def _after_import(done: str):
    """Called when `done` (keras or tensorflow) has finished executing."""
    if any(_initializing(n) for n in _HOOKED if n != done):
        return   # the other one is still importing; its own hook registers
    _uninstall_hook()
    _register_serializables()


class _NotifyingLoader(importlib.abc.Loader):
    """Wraps a module's loader to call `_after_import` once the module has been executed."""

    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _after_import(self._name)

    def __getattr__(self, attr):   # get_resource_reader, is_package, get_code, ...
        return getattr(self._loader, attr)


class _KerasImportHook(importlib.abc.MetaPathFinder):
    """A meta-path finder that only wraps the loaders of `keras` and `tensorflow`."""

    def __init__(self):
        self._busy = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _HOOKED or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _NotifyingLoader(spec.loader, fullname)
        return spec


_HOOK = None


def _uninstall_hook():
    global _HOOK
    if _HOOK is not None and _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)
    _HOOK = None


def _install_hook():
    """Register now if Keras is already imported, else as soon as it is."""
    global _HOOK
    if "keras" in sys.modules and not any(_initializing(n) for n in _HOOKED):
        _register_serializables()
        return
    if "keras" in sys.modules or "tensorflow" in sys.modules:
        # fra_keras imported from inside a half-finished keras / tensorflow import (unusual): too
        # late to hook it; the model classes still register themselves when they are imported.
        return
    _HOOK = _KerasImportHook()
    sys.meta_path.insert(0, _HOOK)


_install_hook()
