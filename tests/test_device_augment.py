"""The on-accelerator augmentation path (fra_keras.data.device_augment) against NumPy, the per-image CPU
path (fra_keras.data.augment) and docs/method.md ("Augmentations")."""

import math

import numpy as np
import pytest
from harness import SMALL_MODEL, assert_uniform_jitter_factors
import tensorflow as tf

from fra_keras.config import ConfigError, FRAConfig
from fra_keras.data import augment as A
from fra_keras.data import device_augment as D
from fra_keras.data.pipeline import pretraining_dataset
from test_augment import _binomial_ok, np_blur, np_gray, np_hue  # noqa: E402  (tests/ is on sys.path)

SIZE = 32
VIEW_PROBABILITIES = {1: {"flip": 0.5, "jitter": 0.8, "grayscale": 0.2, "blur": 1.0, "solarize": 0.0},
                      2: {"flip": 0.5, "jitter": 0.8, "grayscale": 0.2, "blur": 0.1, "solarize": 0.2}}


@pytest.fixture(scope="module")
def config():
    return FRAConfig.from_preset("tiny", image_size=SIZE)


def _smooth_images(n, h, w, seed=0):
    """uint8 (n, h, w, 3) images: smooth colour fields plus a little noise (natural-image-like)."""
    rs = np.random.RandomState(seed)
    low = rs.rand(n, 4, 4, 3).astype(np.float32)
    img = tf.image.resize(low, [h, w], method="bicubic").numpy() + 0.05 * rs.randn(n, h, w, 3)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _device_batch(config, image, n, base=0):
    """`cropped_views` of `image` for the element seeds (base + i, 99), i < n, as one batch."""
    image = tf.constant(image)
    ds = tf.data.Dataset.range(base, base + n).map(
        lambda i: D.cropped_views(image, config, tf.stack([i, tf.constant(99, tf.int64)])))
    return next(iter(ds.batch(n)))


def _cpu_views(config, image, n, base=0):
    """`two_views(normalise=False)` of `image` for the same element seeds as `_device_batch`."""
    image = tf.constant(image)
    ds = tf.data.Dataset.range(base, base + n).map(
        lambda i: A.two_views(image, config, tf.stack([i, tf.constant(99, tf.int64)]), normalise=False))
    v1, v2 = next(iter(ds.batch(n)))
    return {"view1": v1.numpy(), "view2": v2.numpy()}


def _numpy(params):
    return {k: v.numpy() for k, v in params.items()}


# Batched ops against NumPy -----------------------------------------------------------------------
def test_batched_ops_with_per_image_factors_match_numpy():
    x = _smooth_images(3, 20, 24, seed=1) / 255.0
    xt = tf.constant(x, tf.float32)
    f = np.array([0.7, 1.0, 1.35])
    gray = np_gray(x)[..., None]

    def each(fn):   # NumPy reference applied image by image with its own factor
        return np.stack([fn(x[b], f[b], gray[b]) for b in range(3)])

    np.testing.assert_allclose(A.adjust_brightness(xt, f), each(lambda y, v, g: np.clip(v * y, 0, 1)),
                               atol=1e-6)
    np.testing.assert_allclose(A.adjust_contrast(xt, f),
                               each(lambda y, v, g: np.clip(v * y + (1 - v) * g.mean(), 0, 1)), atol=1e-5)
    np.testing.assert_allclose(A.adjust_saturation(xt, f),
                               each(lambda y, v, g: np.clip(v * y + (1 - v) * g, 0, 1)), atol=1e-5)
    np.testing.assert_allclose(A.grayscale(xt), np.repeat(gray, 3, -1), atol=1e-5)
    hue = np.array([-0.1, 0.03, 0.09])
    np.testing.assert_allclose(A.adjust_hue(xt, hue),
                               np.stack([np.clip(np_hue(x[b], hue[b]), 0, 1) for b in range(3)]), atol=2e-4)
    sigma = np.array([0.3, 1.1, 2.0])
    np.testing.assert_allclose(A.gaussian_blur(xt, sigma, 6),
                               np.stack([np_blur(x[b], sigma[b], 6) for b in range(3)]), atol=2e-5)


def test_batched_ops_accept_a_scalar_factor_like_per_image_ops():
    x = tf.constant(_smooth_images(2, 16, 16, seed=2) / 255.0, tf.float32)
    for op, value in ((A.adjust_brightness, 1.2), (A.adjust_contrast, 0.7), (A.adjust_saturation, 1.15),
                      (A.adjust_hue, 0.05)):
        batched = op(x, value).numpy()
        single = np.stack([op(x[b], value).numpy() for b in range(2)])
        np.testing.assert_allclose(batched, single, atol=2e-6, err_msg=op.__name__)


# Same parameters, same views -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def batch48(config):
    """One device-path batch of 48 crops (both views, their parameters), shared by the two views' tests."""
    return _device_batch(config, _smooth_images(1, 40, 36, seed=3)[0], 48)


@pytest.mark.parametrize("view", [1, 2])
def test_batched_views_equal_per_image_views_for_the_same_params(config, batch48, view):
    n = 48
    batch = batch48
    assert batch["view1"].shape[0] == n
    images, params = batch[f"view{view}"], batch[f"view{view}_params"]
    p = _numpy(params)
    for op in ("flip", "jitter", "grayscale", "blur"):       # every op occurs in these 48 draws
        assert p[op].any(), op
    assert p["solarize"].any() == (view == 2)
    out = D.apply_batch_params(images, params, config, normalise=False).numpy()
    for i in range(n):
        one = {k: tf.constant(v[i]) for k, v in p.items()}
        ref = A.pixel_ops(A.to_float(images[i]), one, config, A.PER_IMAGE).numpy()
        np.testing.assert_allclose(out[i], ref, atol=2e-5, err_msg=f"sample {i}")
    normalised = D.apply_batch_params(images, params, config).numpy()
    np.testing.assert_allclose(normalised, (out - np.array(config.mean)) / np.array(config.std), atol=1e-5)


def test_both_paths_give_the_same_views_for_the_same_seed(config):
    """`cropped_views` + `apply_batch_params` (accelerator) against `two_views` (CPU): the same random
    parameters from the same seeds; the views differ only by the 8-bit rounding of the resized crop."""
    n = 64
    image = _smooth_images(1, 50, 44, seed=4)[0]
    batch = _device_batch(config, image, n)
    cpu = _cpu_views(config, image, n)
    for view in ("view1", "view2"):
        dev = D.apply_batch_params(batch[view], batch[view + D.PARAMS_SUFFIX], config,
                                   normalise=False).numpy()
        err = np.abs(dev - cpu[view])
        assert err.mean() < 2e-3 and err.max() < 0.05, (view, err.mean(), err.max())
    other = _cpu_views(config, image, n, base=1000)                      # other seeds: other views
    assert np.abs(other["view1"] - cpu["view1"]).mean() > 0.05


# Distributions ----------------------------------------------------------------------------------
N_DRAWS = 1500


@pytest.fixture(scope="module")
def device_draws(config):
    """The parameters the on-device path ships, for N_DRAWS element seeds (tiny image: fast)."""
    batch = _device_batch(config, _smooth_images(1, 12, 12, seed=5)[0], N_DRAWS)
    return {view: _numpy(batch[f"view{view}_params"]) for view in (1, 2)}


@pytest.mark.parametrize("view", [1, 2])
def test_device_path_decision_frequencies_and_ranges(config, device_draws, view):
    d = device_draws[view]
    for op, p in VIEW_PROBABILITIES[view].items():
        count = int(d[op].sum())
        assert _binomial_ok(count, N_DRAWS, p), f"view {view}: {op} {count}/{N_DRAWS}, expected p={p}"
    assert_uniform_jitter_factors(d)
    orders = {tuple(row) for row in d["jitter_order"]}
    assert len(orders) == 24 and all(sorted(o) == [0, 1, 2, 3] for o in orders)


def test_device_path_draws_equal_cpu_path_draws(config, device_draws):
    """The shipped parameters are `sample_params`' for the same seeds: identical distributions."""
    n = 200
    h = w = 12
    for view in (1, 2):
        ds = tf.data.Dataset.range(n).map(lambda i, v=view: A.sample_params(
            config, v, A.view_seed(tf.stack([i, tf.constant(99, tf.int64)]), v), h, w))
        ref = _numpy(next(iter(ds.batch(n))))
        for key, value in device_draws[view].items():
            np.testing.assert_array_equal(value[:n], ref[key], err_msg=f"view {view}: {key}")


MARKER_N = 300


@pytest.fixture(scope="module")
def marker_batches(config):
    """Device-path batches (both views) of 300 crops of three marker images: a grey ramp shows the
    flip, a saturated colour image shows grayscale, a flat 0.9 grey shows solarize. {op: batch}."""
    s = 40
    ramp = np.repeat(np.repeat(np.linspace(0.05, 0.25, s)[None, :, None], 3, axis=2), s, axis=0)
    rs = np.random.RandomState(3)
    colour = ((rs.randint(0, 3, (s, s))[..., None] == np.arange(3)) * 200 + 30).astype(np.uint8)
    flat = np.full((s, s, 3), round(0.9 * 255), np.uint8)
    return {name: _device_batch(config, image, MARKER_N) for name, image in
            (("flip", (ramp * 255).round().astype(np.uint8)), ("grayscale", colour), ("solarize", flat))}


@pytest.mark.parametrize("view", [1, 2])
def test_device_views_show_each_op_as_decided(config, marker_batches, view):
    """Marker images (as in test_augment.test_full_views_apply_ops_as_decided), through the device path:
    each op is visible in the output exactly when its parameter says it was applied."""
    observed = {}
    for name, batch in marker_batches.items():
        params = batch[f"view{view}_params"]
        out = D.apply_batch_params(batch[f"view{view}"], params, config, normalise=False).numpy()
        if name == "flip":
            seen = out[:, :, 0].mean(axis=(1, 2)) > out[:, :, -1].mean(axis=(1, 2))
        elif name == "grayscale":
            seen = np.abs(out - out[..., :1]).max(axis=(1, 2, 3)) < 1e-6
        else:
            seen = out.mean(axis=(1, 2, 3)) < 0.5
        np.testing.assert_array_equal(seen, params[name].numpy(), err_msg=name)
        observed[name] = int(seen.sum())
    for name, count in observed.items():
        assert _binomial_ok(count, MARKER_N, VIEW_PROBABILITIES[view][name]), (view, name, count)


def _ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic (max distance between the empirical CDFs)."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return np.abs(cdf_a - cdf_b).max()


def test_both_paths_have_the_same_output_distribution(config):
    """Independent seeds for the two paths: the per-view mean and contrast of the outputs follow the
    same distribution (two-sample KS test at the 0.1 % level)."""
    n = 400
    image = _smooth_images(1, 48, 48, seed=6)[0]
    batch = _device_batch(config, image, n, base=0)
    cpu = _cpu_views(config, image, n, base=10_000)
    critical = 1.95 * math.sqrt(2.0 / n)
    for view in ("view1", "view2"):
        dev = D.apply_batch_params(batch[view], batch[view + D.PARAMS_SUFFIX], config,
                                   normalise=False).numpy()
        for stat in (lambda v: v.mean(axis=(1, 2, 3)), lambda v: v.std(axis=(1, 2, 3)),
                     lambda v: v[..., 0].mean(axis=(1, 2)) - v[..., 2].mean(axis=(1, 2))):
            d = _ks_statistic(stat(dev), stat(cpu[view]))
            assert d < critical, (view, d, critical)


# Compilation, step hook, resolution --------------------------------------------------------------
def test_apply_batch_params_compiles_with_xla(config):
    batch = _device_batch(config, _smooth_images(1, 40, 40, seed=7)[0], 16)
    images, params = batch["view2"], batch["view2_params"]
    compiled = tf.function(lambda x, p: D.apply_batch_params(x, p, config), jit_compile=True)
    np.testing.assert_allclose(compiled(images, params), D.apply_batch_params(images, params, config),
                               atol=1e-4)


#: A batch's keys for the tiny preset, whose cross-view clustering targets need each view's geometry.
VIEW_KEYS = {"view1", "view2", "view1_geometry", "view2_geometry"}


def test_augment_views_turns_device_batches_into_normalised_views(config):
    batch = _device_batch(config, _smooth_images(1, 40, 40, seed=8)[0], 4)
    out = D.augment_views(batch, config)
    assert set(out) == VIEW_KEYS
    for view in ("view1", "view2"):
        assert out[view].dtype == tf.float32 and out[view].shape == (4, SIZE, SIZE, 3)
        np.testing.assert_allclose(out[view], D.apply_batch_params(batch[view], batch[view + "_params"],
                                                                   config), atol=1e-6)
    plain = {"view1": tf.zeros([2, SIZE, SIZE, 3]), "view2": tf.ones([2, SIZE, SIZE, 3])}
    assert D.augment_views(plain, config) is plain                  # CPU-path batches pass through
    pair = (plain["view1"], plain["view2"])
    assert D.augment_views(pair, config) is pair
    packed = D.augment_views((batch, None, None), config)               # Keras' (x, y, sample_weight)
    assert packed[1:] == (None, None) and set(packed[0]) == VIEW_KEYS
    np.testing.assert_array_equal(packed[0]["view1"], out["view1"])


def test_resolve_augment_on_device_and_config_field():
    accelerator = bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))
    assert D.resolve_augment_on_device("auto") is accelerator
    assert D.resolve_augment_on_device("TRUE") is True and D.resolve_augment_on_device(False) is False
    with pytest.raises(ValueError, match=r"augment_on_device='gpu' is not allowed; choose one of") as e:
        D.resolve_augment_on_device("gpu")
    assert "\n" not in str(e.value)
    assert FRAConfig().augment_on_device == "auto"
    assert FRAConfig(augment_on_device="false").augment_on_device == "false"
    with pytest.raises(ConfigError, match=r"augment_on_device='sometimes' is not allowed") as e:
        FRAConfig(augment_on_device="sometimes")
    assert "\n" not in str(e.value)
    from fra_keras.pretrain import build_parser

    args = build_parser().parse_args(["--augment-on-device", "true"])
    assert args.augment_on_device == "true"


def test_pretraining_dataset_paths_agree(config, tmp_path):
    """The same seed through `pretraining_dataset` on both paths: the device batches, augmented as the
    train step does, equal the CPU batches up to the 8-bit rounding of the crops."""
    images = _smooth_images(6, 44, 52, seed=9)
    for i, image in enumerate(images):
        tf.io.write_file(str(tmp_path / f"face{i}.jpg"), tf.io.encode_jpeg(image, quality=95))
    cfg = config.replace(batch_size=3)
    device = next(iter(pretraining_dataset(cfg, str(tmp_path), augment_on_device=True)))
    cpu = next(iter(pretraining_dataset(cfg, str(tmp_path), augment_on_device="false")))
    prefetched = next(iter(pretraining_dataset(cfg, str(tmp_path), augment_on_device=False,
                                               prefetch_to_device="/cpu:0")))
    np.testing.assert_array_equal(prefetched["view1"], cpu["view1"])
    assert device["view1"].dtype == tf.uint8 and device["view1"].shape == (3, SIZE, SIZE, 3)
    assert device["view2_params"]["jitter_order"].shape == (3, 4)
    assert cpu["view1"].dtype == tf.float32 and set(cpu) == VIEW_KEYS
    out = D.augment_views(device, cfg)
    assert set(out) == VIEW_KEYS
    for key in ("view1_geometry", "view2_geometry"):   # the same crops and flips on both paths
        np.testing.assert_allclose(out[key], cpu[key], atol=1e-6)
    for view in ("view1", "view2"):
        err = np.abs(out[view].numpy() - cpu[view].numpy()) * np.array(cfg.std)   # back to [0, 1] units
        assert err.mean() < 2e-3 and err.max() < 0.05, (view, err.mean(), err.max())


def test_train_step_augments_device_batches(config):
    """`FRA.train_step` on a device-path batch computes what it computes on the augmented views."""
    from fra_keras.models.fra import FRA

    cfg = FRAConfig.from_preset("tiny", **{**SMALL_MODEL, "image_size": SIZE}, batch_size=4,
                                steps_per_epoch=5, epochs=2, warmup_epochs=1, region_losses=False)
    model = FRA(cfg)
    model.compile(run_eagerly=True)
    weights = model.get_weights()
    batch = _device_batch(cfg, _smooth_images(1, 40, 40, seed=10)[0], 4)
    on_device = model.train_on_batch(batch, return_dict=True)
    model.set_weights(weights)
    model.reset_metrics()
    augmented = model.train_on_batch(D.augment_views(batch, cfg), return_dict=True)
    assert float(on_device["loss"]) == pytest.approx(float(augmented["loss"]), rel=1e-5)
    assert float(on_device["z_std"]) == pytest.approx(float(augmented["z_std"]), rel=1e-5)
