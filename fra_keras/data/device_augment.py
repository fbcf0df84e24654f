"""The on-accelerator augmentation path: `tf.data` decodes and crops, the train step does the rest.

Drawing the paper's augmentations per image in `tf.data` costs several times the JPEG decode on CPU
(docs/data_pipeline.md, "Throughput"), so a GPU / TPU host would starve its accelerator. On this path
the work is split at the random resized crop, which needs the full image:

* in `tf.data` (CPU), per image: `cropped_views` draws both views' parameters with the same
  `augment.sample_params` as the CPU path (same seeds, hence the same random quantities), crops and
  resizes each view to `image_size` and rounds it to uint8 (like PIL after its resize); batches are
  {"view1": uint8 (B, S, S, 3), "view2": uint8, "view1_params": {...}, "view2_params": {...}}, each
  params entry of shape (B,) (`jitter_order`: (B, 4));
* in `FRA.train_step` (accelerator): `augment_views` turns such a batch into normalised float32 views
  with `apply_batch_params` -- flip, colour jitter in the per-image random order, grayscale, Gaussian
  blur and solarize, batched with `tf.where` on the per-image decisions (`augment.pixel_ops` with the
  `BATCHED` strategy: the same ops as the CPU path, no data-dependent control flow, XLA-compilable).

The per-image parameters travel with the batch (a few numbers per view), so the step has no random
state: it is reproducible, and every replica of a distributed step augments its own share. Batches
without parameters (the CPU path, or any other images) pass through `augment_views` unchanged.

`FRAConfig.augment_on_device` chooses the path: "auto" (default) = on the accelerator when a GPU or TPU
is visible, else on CPU; "true" / "false" force it (`resolve_augment_on_device`).
"""

from __future__ import annotations

from typing import Dict

import tensorflow as tf

from fra_keras.config import AUGMENT_MODES
from fra_keras.data import augment

VIEWS = ("view1", "view2")
PARAMS_SUFFIX = "_params"
GEOMETRY_SUFFIX = "_geometry"   # "view1_geometry": (B, 5) `augment.crop_geometry`, cross-view recipe only


def resolve_augment_on_device(mode) -> bool:
    """Whether to augment on the accelerator: "true" / "false" are obeyed (Python bools too); "auto" is
    True when TensorFlow sees a GPU or a TPU."""
    value = str(mode).lower()
    if value not in AUGMENT_MODES:
        raise ValueError(f"augment_on_device={mode!r} is not allowed; choose one of {list(AUGMENT_MODES)}")
    if value != "auto":
        return value == "true"
    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))


def to_uint8(image) -> tf.Tensor:
    """float32 in [0, 1] -> uint8, rounded to the nearest level."""
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)


@augment.no_autograph
def cropped_views(image_uint8, config, seed=None) -> Dict[str, tf.Tensor]:
    """The CPU half, for one uint8 (H, W, 3) image: both views' resized crops and parameters.

    Returns {"view1": uint8 (S, S, 3), "view2": ..., "view1_params": {...}, "view2_params": {...}}:
    the params of `augment.sample_params` without the crop box (already applied). With the same
    `seed`, the parameters equal those `augment.two_views` uses. When the config needs it
    (`augment.needs_geometry`), also "view1_geometry" / "view2_geometry" (5,) (`augment.crop_geometry`).
    """
    size = int(config.image_size)
    geometry = augment.needs_geometry(config)

    def view_fn(image, seed, view):
        image = tf.convert_to_tensor(image)
        shape = tf.shape(image)
        params = augment.sample_params(config, view, augment.view_seed(seed, view), shape[0], shape[1])
        if geometry:
            params["geometry"] = augment.crop_geometry(params["crop"], params["flip"], shape[0], shape[1])
        crop = to_uint8(augment.resized_crop(image, params.pop("crop"), size))
        crop.set_shape([size, size, 3])
        return crop, params

    out = {}
    for view, (crop, params) in zip(VIEWS, augment.both_views(view_fn, image_uint8, seed)):
        if geometry:
            out[view + GEOMETRY_SUFFIX] = params.pop("geometry")
        out[view] = crop
        out[view + PARAMS_SUFFIX] = params
    return out


@augment.no_autograph
def apply_batch_params(images, params, config, normalise: bool = True) -> tf.Tensor:
    """The accelerator half: (B, S, S, 3) uint8 crops (or float32 in [0, 1]) and their per-image
    `params` (see `cropped_views`) -> float32 (B, S, S, 3) views, normalised unless `normalise=False`."""
    x = augment.to_float(images)
    x = augment.pixel_ops(x, params, config, augment.BATCHED)
    return augment.normalize(x, config) if normalise else x


def has_params(data) -> bool:
    """Whether `data` is a batch of the on-device path (views still to augment)."""
    return isinstance(data, dict) and all(v + PARAMS_SUFFIX in data for v in VIEWS)


def augment_views(data, config):
    """A batch of `cropped_views` -> {"view1", "view2"} normalised float32 views (other keys kept);
    also inside Keras' (x, y, sample_weight) packing, e.g. from `train_on_batch`. Any other batch is
    returned unchanged. Called at the start of `FRA.train_step`."""
    if isinstance(data, (tuple, list)) and data and has_params(data[0]):
        return (augment_views(data[0], config),) + tuple(data[1:])
    if not has_params(data):
        return data
    out = {k: v for k, v in data.items() if not k.endswith(PARAMS_SUFFIX)}
    for view in VIEWS:
        out[view] = apply_batch_params(data[view], data[view + PARAMS_SUFFIX], config)
    return out
