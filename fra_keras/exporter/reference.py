"""The verification batches and the Keras reference outputs an export is checked against.

`verification.npz` (in every export version folder) holds the uint8 input batches and the outputs of
the original Keras objects on them, so that `verify` can re-check an export later without the model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from fra_keras.exporter.source import Source, head_values
from fra_keras.preprocessing import normalize_images, resize_images

VERIFY_SEED = 20240617


def verification_inputs(image_size: int, seed: int = VERIFY_SEED) -> dict:
    """Deterministic uint8 batches: b4 (4 images at image_size; b1 is its first image) and odd (2 images
    at another size, so that the in-graph resize is checked too)."""
    rng = np.random.RandomState(seed)
    s = int(image_size)
    odd = (2, s + s // 4 + 3, max(8, s - s // 4 - 5), 3)
    return {"b4": rng.randint(0, 256, (4, s, s, 3)).astype(np.uint8),
            "odd": rng.randint(0, 256, odd).astype(np.uint8)}


def verification_batches(inputs: dict) -> dict:
    """The three batches every comparison runs: b1 (one image), b4 and odd (another size)."""
    return {"b1": inputs["b4"][:1], "b4": inputs["b4"], "odd": inputs["odd"]}


def keras_reference(source: Source, images, head=None, head_names: Sequence[str] = ()) -> dict:
    """Outputs of the *original* Keras objects (FRA.embed / backbone / heatmaps, the head) on uint8
    images: resized on the [0, 1] scale, then normalised as in training (`normalize_images`)."""
    config = source.config
    x = resize_images(tf.cast(images, tf.float32) / 255.0, config.image_size)
    x = normalize_images(x, config.mean, config.std, max_value=1.0)
    features = source.backbone(x, training=False)
    out = {"feature_map": features}
    if source.model is not None:
        out["embedding"] = source.model.embed(x, training=False)
        if source.has_regions:
            out["heatmaps"] = source.model.heatmaps(x, training=False)
    else:
        out["embedding"] = tf.reduce_mean(features, axis=[1, 2])
    if head is not None:
        out.update(zip(head_names, head_values(head(features, training=False), head_names)))
    return {k: tf.cast(v, tf.float32).numpy() for k, v in out.items()}


def reference_batches(source: Source, inputs: dict, head=None, head_names: Sequence[str] = ()) -> dict:
    """`keras_reference` on each of `verification_batches(inputs)`."""
    return {batch: keras_reference(source, images, head, head_names)
            for batch, images in verification_batches(inputs).items()}


def save_reference(path: str, inputs: dict, reference: dict, tolerance_key: str):
    arrays = {f"input__{k}": v for k, v in inputs.items()}
    for batch, outs in reference.items():
        for name, value in outs.items():
            arrays[f"keras__{batch}__{name}"] = value
    with open(path, "wb") as f:
        np.savez_compressed(f, tolerance=np.array(tolerance_key), **arrays)


def load_reference(path: str):
    """(inputs, keras reference outputs per batch, tolerance key) from a verification.npz."""
    inputs, reference = {}, {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            parts = key.split("__")
            if parts[0] == "input":
                inputs[parts[1]] = data[key]
            elif parts[0] == "keras":
                reference.setdefault(parts[1], {})[parts[2]] = data[key]
        tolerance_key = str(data["tolerance"]) if "tolerance" in data.files else "float32"
    return inputs, reference, tolerance_key
