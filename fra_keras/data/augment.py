"""The two asymmetric FRA / BYOL views (docs/method.md, "Augmentations"), with parameters drawn per image.

Every random choice is made per image (Keras 3 augmentation layers draw once per batch, docs/stack.md,
"Keras 3 augmentation"), in graph mode with plain `tf` / `tf.image` ops, on float32 pixels in [0, 1]:

====================================================  =========  =========
op (torchvision 0.11 semantics)                        view 1     view 2
====================================================  =========  =========
RandomResizedCrop(S, scale=(0.2, 1), ratio=(3/4, 4/3))   yes        yes
RandomHorizontalFlip                                     p=0.5      p=0.5
ColorJitter(0.4, 0.4, 0.2, 0.1), random order           p=0.8      p=0.8
RandomGrayscale (3 channels, ITU-R 601 luma)             p=0.2      p=0.2
GaussianBlur, sigma ~ U[0.1, 2.0]                        p=1.0      p=0.1
Solarize (invert values >= 128 / 255)                    p=0.0      p=0.2
Normalize(config.mean, config.std)                       yes        yes
====================================================  =========  =========

All probabilities and ranges come from `FRAConfig`. Randomness is *stateless*: a view is a pure function
of the image and a seed (shape [2] integer tensor), so a seeded pipeline is reproducible. The work is
split in two so that tests can check each part against NumPy:

* `sample_params(config, view, seed, height, width)` draws every random quantity of one view
  (crop box, per-op on/off decisions, jitter factors and order, blur sigma);
* `apply_params(image, params, config)` applies them deterministically: `resized_crop`, then
  `pixel_ops` (flip ... solarize), then `normalize`.

`make_view` = `apply_params(sample_params(...))`; this is the CPU path, per image inside `tf.data`.
The on-accelerator path (fra_keras.data.device_augment) uses the same `sample_params`, and the same
`pixel_ops` on whole batches (`BATCHED`), in the train step. Every pixel op takes one image or a batch.
Deviations from torchvision are listed in docs/data_pipeline.md (float pipeline without 8-bit rounding
between ops; exact Gaussian instead of PIL's box-blur approximation).
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import tensorflow as tf

from fra_keras.preprocessing import normalize_images

# ITU-R 601-2 luma weights, the ones PIL uses for `convert("L")`.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
SOLARIZE_THRESHOLD = 128.0 / 255.0
CROP_ATTEMPTS = 10

# Order of the colour-jitter ops in `params["jitter_order"]`.
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")

# Indices of the per-op sub-seeds split from a view seed.
_SEED_SLOTS = ("crop", "flip", "jitter", "jitter_factors", "jitter_order", "grayscale", "blur",
               "blur_sigma", "solarize")


def no_autograph(fn):
    """No Python control flow depends on tensors here: skip AutoGraph's source conversion, which
    otherwise dominates the time to build a tf.data pipeline (about 3x faster tracing)."""
    return tf.autograph.experimental.do_not_convert(fn)


# Seeds ---------------------------------------------------------------------------------------
def as_seed(seed=None) -> tf.Tensor:
    """A stateless seed (shape [2], int64) from None (drawn from the global RNG), an int or a pair."""
    if seed is None:
        return tf.random.uniform([2], minval=0, maxval=tf.int64.max, dtype=tf.int64)
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    seed.shape.assert_is_compatible_with([2])
    return tf.reshape(seed, [2])


def view_seed(seed, view: int) -> tf.Tensor:
    """The seed of view `view` (1 or 2) derived from an element seed."""
    return tf.random.experimental.stateless_fold_in(as_seed(seed), view)


def _check_view(view):
    """1 or 2 (Python int), or an integer tensor holding 1 or 2 (not checked)."""
    if isinstance(view, tf.Tensor):
        return view
    if view not in (1, 2):
        raise ValueError(f"view={view!r} is not allowed; expected 1 or 2 (the two asymmetric FRA views)")
    return view


def _per_view(values, view):
    """The entry of a (view 1, view 2) pair for `view` (a Python int or a tensor)."""
    if isinstance(view, tf.Tensor):
        return tf.gather(tf.constant([float(v) for v in values], tf.float32), view - 1)
    return float(values[view - 1])


# Random resized crop -------------------------------------------------------------------------
@no_autograph
def sample_crop_box(height, width, seed, scale=(0.2, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                    attempts: int = CROP_ATTEMPTS):
    """torchvision `RandomResizedCrop.get_params`: returns int32 (offset_y, offset_x, crop_h, crop_w).

    Up to `attempts` (area, log-aspect) draws: area fraction ~ U[scale], aspect ~ exp(U[log ratio]);
    w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)); the first draw that fits is used,
    with a uniform integer offset. If none fits, the central crop with the aspect clamped to `ratio`.
    All `attempts` draws are made at once (vectorised); the first valid one is kept.
    """
    seed = as_seed(seed)
    s_area, s_ratio, s_y, s_x = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    area = h * w
    target_area = area * tf.random.stateless_uniform([attempts], s_area, scale[0], scale[1])
    log_ratio = tf.random.stateless_uniform([attempts], s_ratio, math.log(ratio[0]), math.log(ratio[1]))
    aspect = tf.exp(log_ratio)
    cw = tf.round(tf.sqrt(target_area * aspect))   # round half to even, like Python's round()
    ch = tf.round(tf.sqrt(target_area / aspect))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)
    any_ok = tf.reduce_any(ok)

    # Fallback: central crop, aspect clamped to the ratio range.
    in_ratio = w / h
    fb_w = tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w)
    fb_h = tf.where(in_ratio < ratio[0], tf.round(w / ratio[0]), h)

    crop_h = tf.cast(tf.where(any_ok, ch[first], fb_h), tf.int32)
    crop_w = tf.cast(tf.where(any_ok, cw[first], fb_w), tf.int32)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    rand_y = tf.random.stateless_uniform([], s_y, 0, height - crop_h + 1, dtype=tf.int32)
    rand_x = tf.random.stateless_uniform([], s_x, 0, width - crop_w + 1, dtype=tf.int32)
    off_y = tf.where(any_ok, rand_y, (height - crop_h) // 2)
    off_x = tf.where(any_ok, rand_x, (width - crop_w) // 2)
    return off_y, off_x, crop_h, crop_w


# Parameters of one view ------------------------------------------------------------------------
@no_autograph
def sample_params(config, view: int, seed, height, width) -> Dict[str, tf.Tensor]:
    """Every random quantity of view `view` for an image of size (height, width).

    Keys: `crop` (off_y, off_x, h, w int32), booleans `flip`, `jitter`, `grayscale`, `blur`,
    `solarize`; jitter factors `brightness`, `contrast`, `saturation` (multiplicative, in [1-x, 1+x])
    and `hue` (shift in [-h, h]); `jitter_order` (a permutation of 0..3 over `JITTER_OPS`);
    `blur_sigma`. `seed` is the view's seed (see `view_seed`).
    """
    view = _check_view(view)
    seeds = dict(zip(_SEED_SLOTS, tf.unstack(
        tf.random.experimental.stateless_split(as_seed(seed), len(_SEED_SLOTS)))))

    def coin(name, p):
        return tf.random.stateless_uniform([], seeds[name]) < p

    def factor_range(x):  # torchvision ColorJitter._check_input for brightness/contrast/saturation
        return max(0.0, 1.0 - float(x)), 1.0 + float(x)

    jf = tf.random.stateless_uniform([4], seeds["jitter_factors"])
    b_lo, b_hi = factor_range(config.brightness)
    c_lo, c_hi = factor_range(config.contrast)
    s_lo, s_hi = factor_range(config.saturation)
    h = float(config.hue)
    sig_lo, sig_hi = (float(v) for v in config.blur_sigma)
    return {
        "crop": tf.stack(sample_crop_box(height, width, seeds["crop"], config.crop_scale,
                                         config.crop_ratio)),
        "flip": coin("flip", float(config.flip_probability)),
        "jitter": coin("jitter", float(config.jitter_probability)),
        "brightness": b_lo + (b_hi - b_lo) * jf[0],
        "contrast": c_lo + (c_hi - c_lo) * jf[1],
        "saturation": s_lo + (s_hi - s_lo) * jf[2],
        "hue": -h + 2.0 * h * jf[3],
        # torch.randperm(4): a uniformly random permutation.
        "jitter_order": tf.cast(tf.argsort(tf.random.stateless_uniform([4], seeds["jitter_order"])),
                                tf.int32),
        "grayscale": coin("grayscale", float(config.grayscale_probability)),
        "blur": coin("blur", _per_view(config.blur_probability, view)),
        "blur_sigma": tf.random.stateless_uniform([], seeds["blur_sigma"], sig_lo, sig_hi),
        "solarize": coin("solarize", _per_view(config.solarize_probability, view)),
    }


# Pixel ops on float32 images in [0, 1] -----------------------------------------------------------
# Every op takes one image (H, W, 3) or a batch (B, H, W, 3); a factor is a scalar, or one value per
# image of the batch (shape (B,)). The per-image CPU path and the batched on-device path
# (fra_keras.data.device_augment) share these ops.
def to_float(image) -> tf.Tensor:
    """uint8 -> float32 in [0, 1]; float input is taken to be in [0, 1] already."""
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def _per_image(value) -> tf.Tensor:
    """A scalar or per-image (B,) value shaped to broadcast against (H, W, 3) / (B, H, W, 3) images:
    () -> (1, 1, 1), (B,) -> (B, 1, 1, 1). (A one-element operand keeps TF's fast scalar kernels.)"""
    return tf.cast(value, tf.float32)[..., tf.newaxis, tf.newaxis, tf.newaxis]


def _mix_channels(image, matrix) -> tf.Tensor:
    """out[..., j] = sum_i image[..., i] * matrix[i, j]: one matmul over the pixels (much cheaper on CPU
    than broadcasting a (H, W, 1) grey image against three channels). `matrix`: (3, J), or one
    (3, J) matrix per image of a batch (B, 3, J)."""
    shape = tf.shape(image)
    flat = tf.reshape(image, tf.concat([shape[:-3], [-1, 3]], 0))
    out = tf.linalg.matmul(flat, matrix)
    out = tf.reshape(out, tf.concat([shape[:-1], tf.shape(matrix)[-1:]], 0))
    out.set_shape(image.shape[:-1].concatenate(matrix.shape[-1:]))
    return out


def _gray_matrix() -> tf.Tensor:
    """(3, 3) matrix whose three columns are the luma weights: x @ G = luma repeated on 3 channels."""
    return tf.tile(tf.constant(LUMA_WEIGHTS, tf.float32)[:, tf.newaxis], [1, 3])


def luma(image: tf.Tensor) -> tf.Tensor:
    """ITU-R 601 luma (PIL `convert("L")`) of (..., 3) images, keeping a channel axis: (..., 1)."""
    weights = tf.constant(LUMA_WEIGHTS, image.dtype)
    return tf.expand_dims(tf.tensordot(image, weights, axes=[[image.shape.rank - 1], [0]]), -1)


def grayscale(image: tf.Tensor) -> tf.Tensor:
    """ITU-R 601 luma repeated on 3 channels (torchvision `RandomGrayscale`, 3-channel output)."""
    return _mix_channels(image, _gray_matrix())


def flip(image: tf.Tensor) -> tf.Tensor:
    """Horizontal flip of (..., H, W, C) images."""
    return tf.reverse(image, axis=[-2])


def adjust_brightness(image, factor):
    """torchvision: blend with black, x * factor, clipped."""
    return tf.clip_by_value(image * _per_image(factor), 0.0, 1.0)


def adjust_contrast(image, factor):
    """torchvision / PIL ImageEnhance.Contrast: blend with the mean grey level (a scalar per image).

    The mean luma is the luma of the mean colour (both are linear), which saves a pass over the pixels."""
    mean_colour = tf.reduce_mean(image, axis=[-3, -2])                        # (..., 3)
    mean = tf.tensordot(mean_colour, tf.constant(LUMA_WEIGHTS, tf.float32), axes=[[-1], [0]])
    factor = _per_image(factor)
    return tf.clip_by_value(factor * image + (1.0 - factor) * _per_image(mean), 0.0, 1.0)


def adjust_saturation(image, factor):
    """torchvision / PIL ImageEnhance.Color: blend with the grayscale image, f x + (1 - f) luma(x),
    as one 3x3 colour matrix f I + (1 - f) G (G: `_gray_matrix`)."""
    factor = tf.cast(factor, tf.float32)[..., tf.newaxis, tf.newaxis]
    matrix = factor * tf.eye(3) + (1.0 - factor) * _gray_matrix()
    return tf.clip_by_value(_mix_channels(image, matrix), 0.0, 1.0)


def adjust_hue(image, delta):
    """Shift the hue by `delta` (fraction of a turn) in HSV space, like torchvision's adjust_hue.

    A scalar `delta` uses TF's fused `AdjustHue` kernel; per-image deltas (B,) go through
    `rgb_to_hsv` / `hsv_to_rgb` (the same arithmetic, within 1e-6)."""
    delta = tf.cast(delta, tf.float32)
    if delta.shape.rank == 0:
        out = tf.image.adjust_hue(image, delta)
    else:
        hsv = tf.image.rgb_to_hsv(image)
        hue = tf.math.floormod(hsv[..., :1] + _per_image(delta), 1.0)
        out = tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1))
    return tf.clip_by_value(out, 0.0, 1.0)


def solarize(image):
    """PIL `ImageOps.solarize(threshold=128)`: values >= 128 (on the 0-255 scale) are inverted.

    Written as x + [x >= t] (1 - 2x), which is exactly 1 - x or x for x in [0, 1] and 5x cheaper on
    CPU than a `tf.where`."""
    return image + tf.cast(image >= SOLARIZE_THRESHOLD, image.dtype) * (1.0 - 2.0 * image)


def blur_radius(config) -> int:
    """Half-width of the fixed-size Gaussian kernel: ceil(3 * largest sigma)."""
    return max(1, int(math.ceil(3.0 * float(config.blur_sigma[1]))))


def gaussian_kernel1d(sigma, radius: int) -> tf.Tensor:
    """Normalised 1-D Gaussian of std `sigma` sampled on -radius..radius: (2 radius + 1,) for a scalar
    sigma, (B, 2 radius + 1) for per-image sigmas (B,)."""
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.cast(sigma, tf.float32)[..., tf.newaxis]
    k = tf.exp(-0.5 * tf.square(x / sigma))
    return k / tf.reduce_sum(k, axis=-1, keepdims=True)


def _replicate_edges(image, radius: int, axis: int) -> tf.Tensor:
    """Pad `radius` copies of the first and last slices along `axis` (PIL's edge handling)."""
    size = image.shape[axis]
    first = tf.gather(image, [0], axis=axis)
    last = tf.gather(image, [size - 1 if size is not None else tf.shape(image)[axis] - 1], axis=axis)
    reps = [1] * image.shape.rank
    reps[axis] = radius
    return tf.concat([tf.tile(first, reps), image, tf.tile(last, reps)], axis=axis)


def gaussian_blur(image, sigma, radius: int) -> tf.Tensor:
    """Separable Gaussian blur, edges replicated (as PIL does), of one (H, W, C) image with a scalar
    `sigma`, or of a batch (B, H, W, C) with one sigma per image (B,).

    The kernel is built from sigma on a fixed support of 2 radius + 1 taps. Both 1-D passes are
    `depthwise_conv2d`s on the images laid out as (H, W, B, C): the vertical pass treats all of
    W * B * C as channels (wide channels vectorise well on CPU), the horizontal one B * C; each
    channel gets the kernel of its image. On CPU this is 2.5-4x faster than the banded-matrix products
    used before (docs/data_pipeline.md, "Throughput").
    """
    image = tf.convert_to_tensor(image, tf.float32)
    batched = image.shape.rank == 4
    x = tf.transpose(image, [1, 2, 0, 3]) if batched else image[:, :, tf.newaxis, :]   # (H, W, B, C)
    shape = tf.shape(x)
    height, width = shape[0], shape[1]
    taps = tf.reshape(gaussian_kernel1d(sigma, radius), [-1, 2 * radius + 1])       # (B, K)
    taps = tf.transpose(tf.repeat(taps, shape[3], axis=0))                          # (K, B*C)
    vertical = tf.tile(taps, [1, width])                                            # (K, W*B*C)
    x = tf.reshape(_replicate_edges(x, radius, 0), [1, height + 2 * radius, 1, -1])
    x = tf.nn.depthwise_conv2d(x, vertical[:, tf.newaxis, :, tf.newaxis], [1, 1, 1, 1], "VALID")
    x = tf.reshape(x, [1, height, width, -1])
    x = tf.nn.depthwise_conv2d(_replicate_edges(x, radius, 2), taps[tf.newaxis, :, :, tf.newaxis],
                               [1, 1, 1, 1], "VALID")
    x = tf.reshape(x, shape)
    x = tf.transpose(x, [2, 0, 1, 3]) if batched else x[:, :, 0, :]
    x.set_shape(image.shape)
    return x


def resized_crop(image, box, size: int) -> tf.Tensor:
    """Crop `box` = (off_y, off_x, h, w) and resize bilinearly (antialiased, like PIL) to size x size.

    The antialiased kernel (`ScaleAndTranslate`) is 3-4x slower than plain bilinear and only differs
    from it when a side shrinks, so it is used only then (both are half-pixel-centred).
    """
    crop = to_float(tf.slice(image, tf.stack([box[0], box[1], 0]), tf.stack([box[2], box[3], -1])))
    shrinks = (box[2] > size) | (box[3] > size)
    out = tf.cond(shrinks,
                  lambda: tf.image.resize(crop, [size, size], method="bilinear", antialias=True),
                  lambda: tf.image.resize(crop, [size, size], method="bilinear", antialias=False))
    out.set_shape([size, size, crop.shape[-1]])
    return tf.clip_by_value(out, 0.0, 1.0)


# Normalisation -------------------------------------------------------------------------------
def normalize(images, config) -> tf.Tensor:
    """uint8 (0-255) or float ([0, 1], as the ops above give) images -> (x - mean) / std, float32:
    `fra_keras.preprocessing.normalize_images` with the config's statistics and `max_value=1`."""
    return normalize_images(images, config.mean, config.std, max_value=1.0)


def denormalize(views, config, clip: bool = True) -> tf.Tensor:
    """Inverse of `normalize`: float32 in [0, 1] (clipped unless `clip=False`), for pictures."""
    x = (tf.cast(views, tf.float32) * tf.constant(config.std, tf.float32)
         + tf.constant(config.mean, tf.float32))
    return tf.clip_by_value(x, 0.0, 1.0) if clip else x


# Composition ---------------------------------------------------------------------------------
# One sequence of ops for both paths; only how a per-image decision is carried out differs:
# * one image (CPU path, in tf.data): `tf.cond` / `tf.switch_case`, so skipped ops cost nothing;
# * a batch (on-device path, fra_keras.data.device_augment): every op runs on the whole batch and
#   `tf.where` keeps its result for the images whose decision says so (no data-dependent control flow:
#   XLA-compilable).
def _cond_one(flag, fn, x):
    out = tf.cond(flag, lambda: fn(x), lambda: x)
    out.set_shape(x.shape)
    return out


def _switch_one(index, fns, x):
    out = tf.switch_case(index, [(lambda fn=fn: fn(x)) for fn in fns])
    out.set_shape(x.shape)
    return out


def _where_batch(flag, fn, x):
    return tf.where(flag[:, tf.newaxis, tf.newaxis, tf.newaxis], fn(x), x)


def _switch_batch(index, fns, x):
    out = x
    for i, fn in enumerate(fns):
        out = tf.where((index == i)[:, tf.newaxis, tf.newaxis, tf.newaxis], fn(x), out)
    return out


PER_IMAGE = (_cond_one, _switch_one)
BATCHED = (_where_batch, _switch_batch)


def pixel_ops(x, params, config, strategy=PER_IMAGE) -> tf.Tensor:
    """Flip, colour jitter (random order), grayscale, blur, solarize of float32 images in [0, 1]
    (after the crop, before the normalisation) as decided by `params` (see `sample_params`).

    `strategy`: `PER_IMAGE` for one (S, S, 3) image with scalar params, `BATCHED` for (B, S, S, 3)
    images with params of shape (B,) / (B, 4) (`jitter_order`). The jitter applies the four ops in the
    order `params["jitter_order"]` (torchvision `ColorJitter`); an op whose strength is 0 in the config
    is skipped, like torchvision does.
    """
    select, switch = strategy
    jitter_ops = [   # in the order of JITTER_OPS
        (lambda y: adjust_brightness(y, params["brightness"])) if config.brightness > 0 else tf.identity,
        (lambda y: adjust_contrast(y, params["contrast"])) if config.contrast > 0 else tf.identity,
        (lambda y: adjust_saturation(y, params["saturation"])) if config.saturation > 0 else tf.identity,
        (lambda y: adjust_hue(y, params["hue"])) if config.hue > 0 else tf.identity,
    ]

    def jitter(y):
        for position in range(4):
            y = switch(params["jitter_order"][..., position], jitter_ops, y)
        return y

    radius = blur_radius(config)
    x = select(params["flip"], flip, x)
    x = select(params["jitter"], jitter, x)
    x = select(params["grayscale"], grayscale, x)
    x = select(params["blur"], lambda y: gaussian_blur(y, params["blur_sigma"], radius), x)
    return select(params["solarize"], solarize, x)


# Geometry of a view ----------------------------------------------------------------------------
def crop_geometry(crop, flipped, height, width) -> tf.Tensor:
    """Where a view comes from: float32 (5,) [y0, x0, y1, x1, flipped], the crop box `crop` =
    (off_y, off_x, h, w) of `sample_params` in fractions of the source image (height, width), and 1.0
    if the view is flipped horizontally (after the crop), else 0.0. The cross-view clustering loss
    uses it to find the same face point in both views (`fra_keras.losses.grid_correspondence`)."""
    box = tf.cast(crop, tf.float32)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    return tf.stack([box[0] / h, box[1] / w, (box[0] + box[2]) / h, (box[1] + box[3]) / w,
                     tf.cast(flipped, tf.float32)])


def whole_image_geometry(batch_size) -> tf.Tensor:
    """float32 (batch_size, 5) rows [0, 0, 1, 1, 0]: the `crop_geometry` of views that are each the whole
    source image, unflipped. With it the cross-view clustering loss maps every grid cell of one view to
    the same cell of the other (full overlap); for view pairs that come with no geometry (random
    tensors in the benchmarks, hand-made pairs of aligned views)."""
    return tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0, 0.0]]), [batch_size, 1])


def needs_geometry(config) -> bool:
    """Whether pre-training batches must carry each view's geometry: `cluster_targets="cross_view"` with
    the region losses on (without them there is no clustering loss to use it)."""
    return (getattr(config, "cluster_targets", "same_view") == "cross_view"
            and getattr(config, "region_losses", True))


# Views ---------------------------------------------------------------------------------------
@no_autograph
def apply_params(image, params, config, normalise: bool = True) -> tf.Tensor:
    """Apply the sampled `params` to one uint8 (H, W, 3) image: float32 (S, S, 3)."""
    size = int(config.image_size)
    x = resized_crop(image, params["crop"], size)
    x.set_shape([size, size, 3])
    x = pixel_ops(x, params, config, PER_IMAGE)
    return normalize(x, config) if normalise else x


@no_autograph
def make_view(image_uint8, config, view: int, seed=None, normalise: bool = True) -> tf.Tensor:
    """One augmented view (1 or 2) of a uint8 (H, W, 3) image: normalised float32 (S, S, 3).

    `seed`: None (drawn from the global TF RNG), an int, or a shape-[2] integer tensor (stateless,
    reproducible); the view number is folded into it, so both views can be given the same seed.
    """
    view = _check_view(view)
    image = tf.convert_to_tensor(image_uint8)
    if image.shape.rank != 3:
        raise ValueError(f"image has shape {image.shape}; expected one (H, W, 3) image")
    shape = tf.shape(image)
    params = sample_params(config, view, view_seed(seed, view), shape[0], shape[1])
    return apply_params(image, params, config, normalise=normalise)


def both_views(view_fn, image, seed):
    """(view_fn(image, seed, 1), view_fn(image, seed, 2)) through one `tf.function` traced once, with
    the view number as a tensor (it only selects the blur and solarize probabilities): this halves the
    graph-building time of a pipeline. `seed`: as in `make_view`."""
    fn = tf.function(view_fn, autograph=False)
    seed = as_seed(seed)
    return fn(image, seed, tf.constant(1)), fn(image, seed, tf.constant(2))


@no_autograph
def two_views_with_geometry(image_uint8, config, seed=None, normalise: bool = True):
    """`two_views` plus each view's `crop_geometry`, from the same draw of the parameters:
    ((view1, geometry1), (view2, geometry2)), views as `two_views`, geometries float32 (5,)."""

    def view_fn(image, seed, view):
        image = tf.convert_to_tensor(image)
        shape = tf.shape(image)
        params = sample_params(config, view, view_seed(seed, view), shape[0], shape[1])
        geometry = crop_geometry(params["crop"], params["flip"], shape[0], shape[1])
        return apply_params(image, params, config, normalise=normalise), geometry

    return both_views(view_fn, image_uint8, seed)


@no_autograph
def two_views(image_uint8, config, seed=None, normalise: bool = True) -> Tuple[tf.Tensor, tf.Tensor]:
    """(view1, view2) of one uint8 (H, W, 3) image, see `make_view` (`normalise=False`: float32 in
    [0, 1], for a pipeline that normalises whole batches)."""

    def view_fn(image, seed, view):
        return make_view(image, config, view, seed=seed, normalise=normalise)

    return both_views(view_fn, image_uint8, seed)
