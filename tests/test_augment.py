"""Augmentation views (fra_keras.data.augment) against docs/method.md ("Augmentations") and NumPy references."""

import colorsys
import math

import numpy as np
import pytest
import tensorflow as tf
from harness import assert_uniform_jitter_factors, tiny_config
from PIL import Image

from fra_keras.config import FRAConfig
from fra_keras.data import augment as A

SIZE = 32


@pytest.fixture(scope="module")
def config():
    return tiny_config(image_size=SIZE)


def _binomial_ok(count, n, p, sigmas=4.5):
    if p in (0.0, 1.0):
        return count == n * p
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def _identity_params(config, **overrides):
    """Params that leave the image unchanged except what `overrides` switches on."""
    s = config.image_size
    params = {"crop": tf.constant([0, 0, s, s], tf.int32), "flip": False, "jitter": False,
              "brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0,
              "jitter_order": tf.constant([0, 1, 2, 3], tf.int32), "grayscale": False, "blur": False,
              "blur_sigma": 1.0, "solarize": False}
    params.update(overrides)
    return {k: tf.convert_to_tensor(v) for k, v in params.items()}


def _random_image(size=SIZE, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (size, size, 3)).astype(np.uint8)


# NumPy references -------------------------------------------------------------------------
def np_gray(x):
    return x @ np.array([0.299, 0.587, 0.114], np.float64)


def np_blur(x, sigma, radius):
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    rows = np.stack([(pad[i:i + 2 * radius + 1] * k[:, None, None]).sum(0)
                     for i in range(x.shape[0])])
    return np.stack([(rows[:, j:j + 2 * radius + 1] * k[None, :, None]).sum(1)
                     for j in range(x.shape[1])], axis=1)


def np_hue(x, delta):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            h, s, v = colorsys.rgb_to_hsv(*x[i, j])
            out[i, j] = colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)
    return out


# Random decisions ---------------------------------------------------------------------------
N_DRAWS = 2000


@pytest.fixture(scope="module")
def draws(config):
    """sample_params for N_DRAWS seeds and both views (vectorised through tf.data)."""
    out = {}
    for view in (1, 2):
        ds = tf.data.Dataset.range(N_DRAWS).map(
            lambda i, v=view: A.sample_params(config, v, A.view_seed(tf.stack([i, i * 7 + 3]), v), 64, 64))
        out[view] = next(iter(ds.batch(N_DRAWS)))
        out[view] = {k: v.numpy() for k, v in out[view].items()}
    return out


@pytest.mark.parametrize("view", [1, 2])
def test_decision_frequencies_match_method(config, draws, view):
    d = draws[view]
    n = N_DRAWS
    expected = {"flip": 0.5, "jitter": 0.8, "grayscale": 0.2,
                "blur": (1.0, 0.1)[view - 1], "solarize": (0.0, 0.2)[view - 1]}
    assert expected["blur"] == config.blur_probability[view - 1]
    for op, p in expected.items():
        count = int(d[op].sum())
        assert _binomial_ok(count, n, p), f"view {view}: {op} applied {count}/{n}, expected p={p}"


def test_views_draw_independent_decisions(draws):
    # The two views use different seeds: their flips agree about half of the time, not always.
    agree = int((draws[1]["flip"] == draws[2]["flip"]).sum())
    assert _binomial_ok(agree, N_DRAWS, 0.5)


def test_jitter_factor_ranges_and_random_order(config, draws):
    d = draws[1]
    assert_uniform_jitter_factors(d)
    orders = d["jitter_order"]
    assert (np.sort(orders, axis=1) == np.arange(4)).all()          # permutations of the four ops
    counts = {}
    for row in orders:
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert len(counts) == 24                                          # every order occurs
    assert max(counts.values()) < 2 * N_DRAWS / 24 and min(counts.values()) > 0.4 * N_DRAWS / 24


@pytest.mark.parametrize("h, w", [(480, 640), (600, 600)])
def test_crop_box_area_and_aspect(h, w):
    ds = tf.data.Dataset.range(N_DRAWS).map(
        lambda i: tf.stack(A.sample_crop_box(h, w, tf.stack([i, 11]), (0.2, 1.0), (3 / 4, 4 / 3))))
    boxes = next(iter(ds.batch(N_DRAWS))).numpy()
    y, x, ch, cw = boxes.T
    assert (y >= 0).all() and (x >= 0).all() and (y + ch <= h).all() and (x + cw <= w).all()
    area = ch * cw / (h * w)
    aspect = cw / ch
    tol = 0.01  # rounding of w and h to whole pixels
    assert area.min() >= 0.2 - tol and area.max() <= 1.0 + tol
    assert aspect.min() >= 3 / 4 - tol and aspect.max() <= 4 / 3 + tol
    assert area.min() < 0.22 and area.max() > 0.9           # the whole range is used
    assert len(set(map(tuple, boxes))) > 0.95 * N_DRAWS      # offsets vary
    if h == w:
        # Square image: rejections are symmetric, so log(aspect) stays centred (SE about 0.004).
        assert abs(np.log(aspect).mean()) < 0.02


def test_crop_box_fallback_is_central_crop():
    # No draw fits a 10 x 1000 image: torchvision falls back to a central crop with aspect 4/3.
    box = [int(v) for v in A.sample_crop_box(10, 1000, 5)]
    assert box == [0, (1000 - 13) // 2, 10, 13]
    box = [int(v) for v in A.sample_crop_box(1000, 10, 5)]
    assert box == [(1000 - 13) // 2, 0, 13, 10]


# Deterministic ops against NumPy ------------------------------------------------------------
def test_blur_kernel_matches_numpy_gaussian():
    for sigma in (0.1, 0.7, 2.0):
        k = A.gaussian_kernel1d(sigma, 6).numpy()
        ref = np.exp(-np.arange(-6, 7) ** 2 / (2 * sigma ** 2))
        np.testing.assert_allclose(k, ref / ref.sum(), atol=1e-6)
    assert A.blur_radius(FRAConfig()) == 6


def test_blur_view_matches_numpy(config):
    image = _random_image()
    for sigma in (0.5, 1.7):
        out = A.apply_params(image, _identity_params(config, blur=True, blur_sigma=sigma), config,
                             normalise=False).numpy()
        np.testing.assert_allclose(out, np_blur(image / 255.0, sigma, 6), atol=2e-5)


def test_solarize_grayscale_flip_match_numpy(config):
    image = _random_image()
    x = image / 255.0
    sol = A.apply_params(image, _identity_params(config, solarize=True), config, normalise=False)
    np.testing.assert_allclose(sol, np.where(image >= 128, 255 - image, image) / 255.0, atol=1e-6)
    gray = A.apply_params(image, _identity_params(config, grayscale=True), config, normalise=False)
    np.testing.assert_allclose(gray, np.repeat(np_gray(x)[..., None], 3, -1), atol=1e-5)
    flip = A.apply_params(image, _identity_params(config, flip=True), config, normalise=False)
    np.testing.assert_allclose(flip, x[:, ::-1], atol=1e-6)
    same = A.apply_params(image, _identity_params(config), config, normalise=False)
    np.testing.assert_allclose(same, x, atol=1e-5)


def test_jitter_ops_match_numpy_in_the_sampled_order(config):
    image = _random_image(seed=1)
    x = image / 255.0
    b, c, s, h = 1.3, 0.7, 1.15, 0.06
    ops = [lambda y: np.clip(y * b, 0, 1),
           lambda y: np.clip(c * y + (1 - c) * np_gray(y).mean(), 0, 1),
           lambda y: np.clip(s * y + (1 - s) * np_gray(y)[..., None], 0, 1),
           lambda y: np.clip(np_hue(y, h), 0, 1)]
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        params = _identity_params(config, jitter=True, brightness=b, contrast=c, saturation=s, hue=h,
                                  jitter_order=tf.constant(order, tf.int32))
        out = A.apply_params(image, params, config, normalise=False).numpy()
        ref = x
        for i in order:
            ref = ops[i](ref)
        np.testing.assert_allclose(out, ref, atol=2e-4, err_msg=f"order {order}")


@pytest.mark.parametrize("box", [(5, 9, 60, 50), (30, 20, 12, 16), (0, 0, 40, 18)])
def test_resized_crop_matches_pil_bilinear(box):
    # Shrinking (antialiased), enlarging, and mixed (one side shrinks: antialiased path).
    image = _random_image(size=80, seed=2)
    y, x, h, w = box
    out = A.resized_crop(image, tf.constant(box), 24).numpy() * 255.0
    ref = np.asarray(Image.fromarray(image[y:y + h, x:x + w]).resize((24, 24), Image.BILINEAR), np.float64)
    err = np.abs(out - ref)
    assert err.mean() < 0.6 and err.max() < 3.0, (err.mean(), err.max())


def test_normalize_denormalize_round_trip(config):
    image = _random_image()
    norm = A.normalize(image, config).numpy()
    ref = (image / 255.0 - np.array(config.mean)) / np.array(config.std)
    np.testing.assert_allclose(norm, ref, atol=1e-5)
    np.testing.assert_allclose(A.normalize(image / 255.0, config), ref, atol=1e-5)
    np.testing.assert_allclose(A.denormalize(norm, config), image / 255.0, atol=1e-6)


# Whole views ------------------------------------------------------------------------------
def test_views_are_float32_finite_sized_and_differ(config):
    image = _random_image(size=50)
    v1, v2 = A.two_views(image, config, seed=7)
    for v in (v1, v2):
        assert v.dtype == tf.float32 and v.shape == (SIZE, SIZE, 3)
        assert np.isfinite(v.numpy()).all()
    assert np.abs(v1.numpy() - v2.numpy()).mean() > 0.05
    w1, w2 = A.two_views(image, config, seed=7)                      # stateless: reproducible
    np.testing.assert_array_equal(v1, w1)
    np.testing.assert_array_equal(v2, w2)
    # Same draws as make_view (graph vs eager arithmetic may differ in the last bits).
    np.testing.assert_allclose(v1, A.make_view(image, config, 1, seed=7), atol=1e-5)
    np.testing.assert_allclose(v2, A.make_view(image, config, 2, seed=7), atol=1e-5)
    u1, _ = A.two_views(image, config, seed=8)
    assert not np.array_equal(v1, u1)
    r1, r2 = A.two_views(image, config, seed=7, normalise=False)          # for batch normalisation
    std, mean = np.array(config.std), np.array(config.mean)
    np.testing.assert_allclose(r1, v1.numpy() * std + mean, atol=1e-5)
    np.testing.assert_allclose(r2, v2.numpy() * std + mean, atol=1e-5)
    assert A.make_view(image, config, 1).shape == (SIZE, SIZE, 3)     # unseeded path
    with pytest.raises(ValueError, match="view=3"):
        A.make_view(image, config, 3)


def _marker_views(config, image, view, n):
    """make_view (unnormalised) of `image` for seeds 0..n-1, with the params it used."""
    image = tf.constant(image)

    def one(i):
        seed = tf.stack([i, tf.constant(12345, tf.int64)])
        params = A.sample_params(config, view, A.view_seed(seed, view), tf.shape(image)[0],
                                 tf.shape(image)[1])
        return A.make_view(image, config, view, seed=seed, normalise=False), params

    ds = tf.data.Dataset.range(n).map(one, num_parallel_calls=tf.data.AUTOTUNE)
    out, params = next(iter(ds.batch(n)))
    return out.numpy(), {k: v.numpy() for k, v in params.items()}


N_MARKER = 300


@pytest.mark.parametrize("view", [1, 2])
def test_full_views_apply_ops_as_decided(config, view):
    """Markers that make one op visible in the output, whatever else is applied.

    * flip: a grey horizontal ramp in [0.05, 0.25] (jitter keeps it monotonic and below the solarize
      threshold; grayscale, saturation, hue do nothing to grey) -> flipped iff left > right;
    * grayscale: a saturated colour image -> R == G == B only when grayscale was applied;
    * solarize: a flat grey 0.9 image (crop, blur, contrast, saturation, hue leave it flat; brightness
      keeps it >= 0.54) -> below 0.5 iff solarized.
    """
    s = 40
    ramp = np.repeat(np.linspace(0.05, 0.25, s)[None, :, None], 3, axis=2)
    ramp = np.repeat(ramp, s, axis=0)
    out, p = _marker_views(config, (ramp * 255).round().astype(np.uint8), view, N_MARKER)
    flipped = out[:, :, 0].mean(axis=(1, 2)) > out[:, :, -1].mean(axis=(1, 2))
    np.testing.assert_array_equal(flipped, p["flip"])
    assert _binomial_ok(int(flipped.sum()), N_MARKER, 0.5)

    rs = np.random.RandomState(3)
    one_hot = rs.randint(0, 3, (s, s))[..., None] == np.arange(3)
    colour = (one_hot * 200 + 30).astype(np.uint8)                   # pure-ish primaries per pixel
    out, p = _marker_views(config, colour, view, N_MARKER)
    is_gray = (np.abs(out - out[..., :1]).max(axis=(1, 2, 3)) < 1e-6)
    np.testing.assert_array_equal(is_gray, p["grayscale"])
    assert _binomial_ok(int(is_gray.sum()), N_MARKER, 0.2)

    flat = np.full((s, s, 3), round(0.9 * 255), np.uint8)
    out, p = _marker_views(config, flat, view, N_MARKER)
    solarized = out.mean(axis=(1, 2, 3)) < 0.5
    np.testing.assert_array_equal(solarized, p["solarize"])
    assert _binomial_ok(int(solarized.sum()), N_MARKER, (0.0, 0.2)[view - 1])
    # Blur is always on for view 1 (decided per image, see test_decision_frequencies_match_method).
    assert _binomial_ok(int(p["blur"].sum()), N_MARKER, (1.0, 0.1)[view - 1])


def test_probabilities_come_from_the_config():
    cfg = tiny_config(image_size=SIZE, flip_probability=0.0, jitter_probability=1.0, grayscale_probability=1.0,
                      blur_probability=(0.0, 1.0), solarize_probability=(1.0, 0.0))
    ds = tf.data.Dataset.range(50).map(lambda i: (A.sample_params(cfg, 1, tf.stack([i, i]), 64, 64),
                                                  A.sample_params(cfg, 2, tf.stack([i, i]), 64, 64)))
    p1, p2 = next(iter(ds.batch(50)))
    assert not p1["flip"].numpy().any() and p1["jitter"].numpy().all() and p1["grayscale"].numpy().all()
    assert not p1["blur"].numpy().any() and p2["blur"].numpy().all()
    assert p1["solarize"].numpy().all() and not p2["solarize"].numpy().any()
