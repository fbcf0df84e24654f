"""The input contract of every FRA model: images -> the normalised float32 tensor the backbone takes.

FRA models (`model.backbone`, `model.embed`, `model.heatmaps`, `load_backbone(...)`) take images
normalised with the training statistics, channels last, RGB::

    x = (pixels / 255 - mean) / std        # mean / std: the config's, VGGFace2's by default

    from fra_keras.preprocessing import normalize_images
    x = normalize_images(images_uint8, model.config.mean, model.config.std)

`VGGFACE2_MEAN` = (0.5231, 0.4044, 0.3489) and `VGGFACE2_STD` = (0.2536, 0.2194, 0.2070) are the
statistics of the official code (`--data_norm vggface2`; docs/method.md, "Augmentations"); they are the
defaults of `FRAConfig.mean` / `FRAConfig.std` (defined in `fra_keras.config`, re-exported here).

Every place that feeds a model goes through this module: the augmentation pipeline
(`fra_keras.data.augment`), the export graph and its Keras reference (`fra_keras.exporter`), the
downstream feature extractors and heads, `visualize` and `monitor`. Exports apply
`resize_images` then `normalize_images` inside the graph, so their clients send uint8 images.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from fra_keras.config import VGGFACE2_MEAN, VGGFACE2_STD

__all__ = ["VGGFACE2_MEAN", "VGGFACE2_STD", "normalize_images", "resize_images"]


def _statistics(name: str, values) -> tuple:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={values!r} must be a sequence of numbers, one per channel") from None
    if not out:
        raise ValueError(f"{name}={values!r} must hold one number per channel (3 for RGB)")
    return out


def _as_statistics(mean, std):
    """float32 tensors of the statistics. Tensors are used as given (a tf.function then captures them
    instead of folding constants, which changes the last bit); sequences are checked."""
    if tf.is_tensor(mean) and tf.is_tensor(std):
        return tf.cast(mean, tf.float32), tf.cast(std, tf.float32)
    mean, std = _statistics("mean", mean), _statistics("std", std)
    if len(mean) != len(std) or min(std) <= 0:
        raise ValueError(f"mean={mean!r} and std={std!r} must have one number per channel each, std > 0")
    return tf.constant(mean, tf.float32), tf.constant(std, tf.float32)


def normalize_images(images, mean: Sequence[float] = VGGFACE2_MEAN, std: Sequence[float] = VGGFACE2_STD,
                     max_value: float = 255.0) -> tf.Tensor:
    """Images -> the model input `(x / 255 - mean) / std`, float32, same shape.

    Args:
      images: (..., C) channels last, RGB. uint8 (0-255), or float: floats are divided by `max_value`,
        so float images in [0, 255] (Keras image utilities, `tf.image.resize` of uint8) need nothing
        more and float images already in [0, 1] (the augmentation ops) pass `max_value=1.0`.
      mean, std: per-channel statistics on the [0, 1] scale (C numbers each; `config.mean`,
        `config.std`; VGGFace2's by default), or float32 tensors of them.
      max_value: the value of a white float pixel: 255 (default) or 1. Ignored for uint8.
    Returns: float32 tensor of the same shape.
    """
    mean, std = _as_statistics(mean, std)
    try:
        scale = float(max_value)
    except (TypeError, ValueError):
        scale = float("nan")
    if not scale > 0:
        raise ValueError(f"max_value={max_value!r} must be a positive number: 255 for float images in "
                         "[0, 255], 1 for float images in [0, 1]")
    x = tf.convert_to_tensor(images)
    if x.dtype == tf.uint8:
        x = tf.cast(x, tf.float32) / 255.0
    else:
        x = tf.cast(x, tf.float32)
        if scale != 1.0:
            x = x / scale
    return (x - mean) / std


def resize_images(images, size: int) -> tf.Tensor:
    """The exports' resize: (B, H, W, C) -> float32 (B, size, size, C), bilinear with half-pixel centres
    and no antialiasing, values on the input's scale (uint8 input gives floats in [0, 255]).

    Exports apply it to every request before `normalize_images`; send face crops close to `size` for
    training-like inputs (docs/export.md).
    """
    size = int(size)
    if size <= 0:
        raise ValueError(f"size={size!r} must be a positive number of pixels")
    return tf.image.resize(tf.cast(images, tf.float32), [size, size], method="bilinear")
