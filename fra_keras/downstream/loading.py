"""`load_feature_extractor(path)`: one object for every kind of pre-trained model evaluate accepts.

``path`` may be:

* a ``model.keras`` written by pre-training (a full `FRA`: backbone, heads, prototypes -- the only kind
  that can draw region heatmaps), or a downstream ``.keras`` model (its backbone is used);
* a ``backbone.weights.h5`` with the run's ``config.json`` beside it;
* a run folder holding ``model.keras`` or ``backbone.weights.h5``;
* an exported SavedModel folder (``saved_model.pb``) whose ``serving_default`` signature takes uint8
  ``images`` (B, H, W, 3) and returns ``embedding`` and ``feature_map`` (linear probe only: there are no
  trainable Keras weights to fine-tune);
* ``random``: a randomly initialised backbone (or whole FRA model) from a preset, for baselines.

Every failure raises `ModelLoadError` (a ``ValueError``) with a one-line message naming the path.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional

import numpy as np

KINDS = ("keras_model", "backbone_weights", "saved_model", "random")
EXPECTED = ("a model.keras from pre-training, a backbone.weights.h5 with config.json beside it, a run "
            "folder holding one of them, an exported SavedModel folder (saved_model.pb), or 'random'")


class ModelLoadError(ValueError):
    """The model path is missing or not a model evaluate can use."""


def resolve_model_path(path: str) -> tuple:
    """(kind, file) for `path` without importing TensorFlow; raises `ModelLoadError`."""
    if path == "random":
        return "random", None
    if not os.path.exists(path):
        raise ModelLoadError(f"--model {path!r} does not exist; expected {EXPECTED}")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return "saved_model", path
        for name, kind in (("model.keras", "keras_model"), ("backbone.weights.h5", "backbone_weights")):
            if os.path.isfile(os.path.join(path, name)):
                return kind, os.path.join(path, name)
        raise ModelLoadError(f"--model {path!r} is a folder without saved_model.pb, model.keras or "
                             f"backbone.weights.h5; expected {EXPECTED}")
    if path.endswith(".keras"):
        return "keras_model", path
    if path.endswith(".weights.h5"):
        return "backbone_weights", path
    raise ModelLoadError(f"--model {path!r} is not a .keras file, a .weights.h5 file or a SavedModel "
                         f"folder; expected {EXPECTED}")


@dataclasses.dataclass(eq=False)
class FeatureExtractor:
    """A frozen (or fine-tunable) feature extractor with its preprocessing.

    Attributes:
      kind: one of `KINDS`. path: the file / folder loaded (None for random).
      config: the `FRAConfig` of the backbone (None for a SavedModel without config.json).
      backbone: Keras backbone, normalised images -> (B, h, w, C); None for a SavedModel.
      fra_model: the whole `FRA` model when one was loaded / built (region heatmaps), else None.
      image_size: the resolution to evaluate at. mean / std: the backbone's normalisation.
      channels: C.
    """

    kind: str
    path: Optional[str]
    config: Any
    backbone: Any
    fra_model: Any
    image_size: int
    mean: tuple
    std: tuple
    channels: int
    signature: Any = None
    _fn: Any = None

    @property
    def can_finetune(self) -> bool:
        return self.backbone is not None

    @property
    def has_regions(self) -> bool:
        return self.fra_model is not None and bool(self.fra_model.config.region_losses)

    def normalize(self, images_uint8):
        """uint8 (or [0, 255] float) images -> the backbone's input (`normalize_images`)."""
        from fra_keras.preprocessing import normalize_images

        return normalize_images(images_uint8, self.mean, self.std)

    def feature_map(self, images_uint8):
        """uint8 (B, H, W, 3) -> float32 feature map (B, h, w, C) (backbone in inference mode)."""
        import tensorflow as tf

        if self._fn is None:
            if self.signature is not None:
                sig = self.signature
                self._fn = lambda x: sig(images=tf.cast(x, tf.uint8))["feature_map"]
            else:
                backbone = self.backbone
                normalize = self.normalize
                self._fn = tf.function(lambda x: tf.cast(backbone(normalize(x), training=False), tf.float32),
                                       reduce_retracing=True, autograph=False)
        return self._fn(tf.convert_to_tensor(images_uint8))

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "image_size": self.image_size, "channels": self.channels,
                "mean": list(self.mean), "std": list(self.std),
                "config": None if self.config is None else self.config.to_dict()}


def _config_beside(path):
    from fra_keras.config import FRAConfig

    cfg = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    return FRAConfig.from_json(cfg) if os.path.isfile(cfg) else None


def _from_backbone(kind, path, backbone, config, fra_model, image_size):
    return FeatureExtractor(kind=kind, path=path, config=config, backbone=backbone, fra_model=fra_model,
                            image_size=int(image_size or config.image_size), mean=tuple(config.mean),
                            std=tuple(config.std), channels=int(backbone.output_shape[-1]))


def build_random(config, seed: int = 0, with_regions: bool = True):
    """A randomly initialised FRA model (or bare backbone) for `config`, seeded."""
    import keras

    from fra_keras.models.backbone import build_backbone
    from fra_keras.models.fra import FRA

    keras.utils.set_random_seed(int(seed))
    if with_regions:
        model = FRA(config)
        return model.backbone, model
    return build_backbone(config, synchronized=False), None


def random_extractor(config, seed: int = 0, image_size: Optional[int] = None, with_regions: bool = False):
    backbone, fra_model = build_random(config, seed, with_regions)
    return _from_backbone("random", None, backbone, config, fra_model, image_size)


def load_feature_extractor(path: str, image_size: Optional[int] = None, preset: str = "tiny",
                           config_overrides: Optional[dict] = None, seed: int = 0,
                           with_regions: bool = False) -> FeatureExtractor:
    """Load `path` (see the module docstring) as a `FeatureExtractor`.

    Args:
      image_size: evaluation resolution; default: the config's (ResNets are fully convolutional).
      preset, config_overrides, seed: for ``random`` only -- the `FRAConfig` preset, field overrides
        and the initialisation seed.
      with_regions: for ``random``, build the whole FRA model (heatmaps) instead of the bare backbone.
    """
    kind, file = resolve_model_path(path)
    from fra_keras.config import ConfigError, FRAConfig

    if kind == "random":
        try:
            config = FRAConfig.from_preset(preset, **(config_overrides or {}))
        except ConfigError as exc:
            raise ModelLoadError(f"--model random: {exc}") from None
        return random_extractor(config, seed, image_size, with_regions)
    if kind == "saved_model":
        return _load_saved_model(file, image_size)
    if kind == "backbone_weights":
        config = _config_beside(file)
        if config is None:
            raise ModelLoadError(f"--model {file!r}: no config.json beside it (the run folder's config gives "
                                 "the architecture)")
        from fra_keras.models.backbone import load_backbone

        try:
            backbone = load_backbone(file, config)
        except Exception as exc:  # h5py / Keras raise many types for a wrong file
            raise ModelLoadError(f"--model {file!r} could not be loaded as backbone weights for the "
                                 f"config beside it: {type(exc).__name__}: {_first_line(exc)}") from None
        return _from_backbone(kind, file, backbone, config, None, image_size)
    return _load_keras(file, image_size)


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _load_keras(file, image_size):
    import keras

    import fra_keras.downstream.models  # noqa: F401  (registers the downstream classes)
    import fra_keras.models.fra  # noqa: F401  (registers FRA)
    from fra_keras.models.fra import FRA

    try:
        model = keras.saving.load_model(file)
    except Exception as exc:
        raise ModelLoadError(f"--model {file!r} could not be loaded as a Keras model: "
                             f"{type(exc).__name__}: {_first_line(exc)}") from None
    if isinstance(model, FRA):
        return _from_backbone("keras_model", file, model.backbone, model.config, model, image_size)
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ModelLoadError(f"--model {file!r} is a Keras model without a backbone (expected a FRA "
                             "model.keras or a downstream model)")
    config = _config_beside(file)
    if config is None:
        from fra_keras.config import FRAConfig

        config = FRAConfig.from_preset("tiny").replace(mean=tuple(getattr(model, "mean", (0.5, 0.5, 0.5))),
                                                       std=tuple(getattr(model, "std", (0.5, 0.5, 0.5))))
        if image_size is None:
            raise ModelLoadError(f"--model {file!r}: no config.json beside it; pass --image-size")
    return _from_backbone("keras_model", file, backbone, config, None, image_size)


def _load_saved_model(folder, image_size):
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(folder)
    except Exception as exc:
        raise ModelLoadError(f"--model {folder!r} could not be loaded as a SavedModel: "
                             f"{type(exc).__name__}: {_first_line(exc)}") from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ModelLoadError(f"--model {folder!r}: the SavedModel has no 'serving_default' signature")
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if "images" not in inputs or "feature_map" not in outputs:
        raise ModelLoadError(f"--model {folder!r}: serving_default must take 'images' and return "
                             f"'feature_map' (got inputs {sorted(inputs)}, outputs {sorted(outputs)})")
    spec = inputs["images"]
    static = spec.shape.as_list()
    if image_size is None:
        if static[1] is not None:
            image_size = int(static[1])
        else:
            config = _config_beside(os.path.join(folder, "x")) or _config_beside(folder)
            if config is None:
                raise ModelLoadError(f"--model {folder!r}: the SavedModel input size is not fixed and no "
                                     "config.json was found; pass --image-size")
            image_size = config.image_size
    channels = outputs["feature_map"].shape[-1]
    config = _config_beside(os.path.join(folder, "x"))
    mean = tuple(config.mean) if config else (0.0, 0.0, 0.0)
    std = tuple(config.std) if config else (1.0, 1.0, 1.0)
    extractor = FeatureExtractor(kind="saved_model", path=folder, config=config, backbone=None, fra_model=None,
                                 image_size=int(image_size), mean=mean, std=std, channels=int(channels or 0),
                                 signature=signature)
    extractor._loaded = loaded  # keep the trackable object alive (the signature refers to it)
    if not extractor.channels:
        probe = extractor.feature_map(np.zeros((1, image_size, image_size, 3), np.uint8))
        extractor.channels = int(probe.shape[-1])
    return extractor
