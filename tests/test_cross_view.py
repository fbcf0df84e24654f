"""Cross-view clustering targets (opt-in `cluster_targets="cross_view"`).

The geometry is checked against the pixels themselves: source images whose red / green channels are
linear ramps of the column / row encode, in every pixel of a view, where in the source that pixel came
from. The carried targets, the loss and the pipeline's geometry are checked against NumPy loops.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fra_keras import losses
from fra_keras.config import ConfigError, FRAConfig
from fra_keras.data import augment, device_augment
from harness import tiny_config, tiny_model, two_view_batch
from test_losses import _log_softmax, _softmax, ref_sinkhorn

SOURCE_H, SOURCE_W = 150, 200
SIZE = 96          # view size
GRID = 6           # feature grid side (the tiny preset's 96 px at stride 16)


def ramp_image(height=SOURCE_H, width=SOURCE_W):
    """uint8 (H, W, 3): red = column, green = row, each scaled to 0..255 over the pixel centres."""
    x = (np.arange(width) + 0.5) / width
    y = (np.arange(height) + 0.5) / height
    image = np.zeros((height, width, 3), np.float64)
    image[..., 0] = x[np.newaxis, :]
    image[..., 1] = y[:, np.newaxis]
    return np.round(image * 255.0).astype(np.uint8)


def source_fractions(view):
    """(..., 3) float views in [0, 1] of a ramp image -> (..., 2) source (row, col) fractions."""
    return np.stack([view[..., 1], view[..., 0]], axis=-1)


def geometric_config(**overrides):
    """Only crop and flip: every colour / blur op off, so a view's pixels keep their ramp values."""
    return FRAConfig.from_preset("tiny", image_size=SIZE, jitter_probability=0.0, grayscale_probability=0.0,
                                 blur_probability=(0.0, 0.0), solarize_probability=(0.0, 0.0),
                                 cluster_targets="cross_view", **overrides)


def np_bilinear(maps, row, col):
    """NumPy: value of maps (h, w, K) at (row, col), clamped to the grid, by the four-cell formula."""
    h, w = maps.shape[:2]
    row = min(max(row, 0.0), h - 1.0)
    col = min(max(col, 0.0), w - 1.0)
    r0, c0 = int(np.floor(row)), int(np.floor(col))
    r1, c1 = min(r0 + 1, h - 1), min(c0 + 1, w - 1)
    fr, fc = row - r0, col - c0
    return ((1 - fr) * (1 - fc) * maps[r0, c0] + (1 - fr) * fc * maps[r0, c1]
            + fr * (1 - fc) * maps[r1, c0] + fr * fc * maps[r1, c1])


def np_correspondence(ga, gb, h, w):
    """NumPy, cell by cell: the (row, col) on view B's grid of each cell centre of view A, and validity."""
    coords = np.zeros((h, w, 2))
    valid = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            v, u = (i + 0.5) / h, (j + 0.5) / w
            if ga[4] > 0.5:
                u = 1.0 - u
            y, x = ga[0] + v * (ga[2] - ga[0]), ga[1] + u * (ga[3] - ga[1])
            vb, ub = (y - gb[0]) / (gb[2] - gb[0]), (x - gb[1]) / (gb[3] - gb[1])
            if gb[4] > 0.5:
                ub = 1.0 - ub
            coords[i, j] = (vb * h - 0.5, ub * w - 0.5)
            valid[i, j] = float(0 <= vb <= 1 and 0 <= ub <= 1)
    return coords, valid


def view_and_geometry(image, config, seed, view):
    """One view made by the real crop / flip ops (float32 (S, S, 3) in [0, 1]) and its geometry."""
    params = augment.sample_params(config, view, augment.view_seed(seed, view), *image.shape[:2])
    crop = augment.resized_crop(tf.constant(image), params["crop"], SIZE)
    crop = tf.where(params["flip"], augment.flip(crop), crop)
    geometry = augment.crop_geometry(params["crop"], params["flip"], *image.shape[:2])
    return crop.numpy(), geometry.numpy()


def cell_means(view, grid=GRID):
    """(S, S, C) -> (grid, grid, C) block means: on a linear ramp, the value at each block's centre."""
    s = view.shape[0] // grid
    return view.reshape(grid, s, grid, s, -1).mean(axis=(1, 3))


# Geometry ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_correspondence_finds_the_same_source_point_in_the_pixels(seed):
    """A cell of view A and the point `grid_correspondence` names on view B show the same source point."""
    config = geometric_config(crop_scale=(0.3, 1.0))
    image = ramp_image()
    (va, ga), (vb, gb) = (view_and_geometry(image, config, seed, v) for v in (1, 2))
    cells_a, cells_b = source_fractions(cell_means(va)), source_fractions(cell_means(vb))
    coords, valid = (t.numpy()[0] for t in losses.grid_correspondence(ga[None], gb[None], GRID, GRID))
    # Where B's pixels come from, read from B's own pixels: the source box B covers.
    pixels_b = source_fractions(vb)
    lo, hi = pixels_b.reshape(-1, 2).min(axis=0), pixels_b.reshape(-1, 2).max(axis=0)
    margin = 1.5 / np.array([SOURCE_H, SOURCE_W])
    checked = 0
    for i in range(GRID):
        for j in range(GRID):
            point = cells_a[i, j]
            if np.all(point > lo + margin) and np.all(point < hi - margin):
                assert valid[i, j] == 1.0, (i, j, point, lo, hi)
            elif np.any(point < lo - margin) or np.any(point > hi + margin):
                assert valid[i, j] == 0.0, (i, j, point, lo, hi)
            row, col = coords[i, j]
            if valid[i, j] and 0.0 <= row <= GRID - 1 and 0.0 <= col <= GRID - 1:
                # Linear ramps interpolate exactly between B's cell centres.
                np.testing.assert_allclose(np_bilinear(cells_b, row, col), point, atol=2.5 / 255)
                checked += 1
    assert checked > 0 or valid.sum() == 0


def test_correspondence_matches_cell_by_cell_numpy():
    rng = np.random.default_rng(0)
    lo = rng.uniform(0.0, 0.5, size=(5, 2))
    hi = lo + rng.uniform(0.3, 0.5, size=(5, 2))
    flips = np.array([[0], [1], [1], [0], [1]])
    geometry = np.concatenate([lo, hi, flips], axis=1).astype(np.float32)
    ga, gb = geometry, geometry[::-1].copy()
    coords, valid = losses.grid_correspondence(ga, gb, 4, 5)
    for b in range(5):
        want_coords, want_valid = np_correspondence(ga[b], gb[b], 4, 5)
        np.testing.assert_allclose(coords.numpy()[b], want_coords, atol=1e-4)
        np.testing.assert_array_equal(valid.numpy()[b], want_valid)
    assert 0 < valid.numpy().mean() < 1   # the draw has overlapping and non-overlapping cells


def test_bilinear_sample_matches_numpy_and_clamps():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(3, 4, 5, 2)).astype(np.float32)
    coords = rng.uniform(-1.5, 5.5, size=(3, 2, 3, 2)).astype(np.float32)
    got = losses.bilinear_sample(maps, coords).numpy()
    for b in range(3):
        for i in range(2):
            for j in range(3):
                np.testing.assert_allclose(got[b, i, j], np_bilinear(maps[b], *coords[b, i, j]), atol=1e-5)


# Loss ----------------------------------------------------------------------------------------
def np_cross_view_loss(s, t, gs, gt, tau_s=0.1, tau_t=0.04, iters=3):
    """NumPy: Sinkhorn on the teacher's view, targets carried cell by cell, weighted CE + entropy term."""
    b, h, w, k = s.shape
    q = ref_sinkhorn(_softmax(t.reshape(-1, k) / tau_t), iters).reshape(b, h, w, k)
    log_p = _log_softmax(s.reshape(-1, k) / tau_s).reshape(b, h, w, k)
    ce_sum, weight = 0.0, 0.0
    for n in range(b):
        coords, valid = np_correspondence(gs[n], gt[n], h, w)
        for i in range(h):
            for j in range(w):
                if valid[i, j]:
                    target = np_bilinear(q[n], *coords[i, j])
                    ce_sum += -np.sum(target * log_p[n, i, j])
                    weight += 1.0
    pbar = np.exp(log_p).reshape(-1, k).mean(axis=0)
    return ce_sum / max(weight, 1e-12) + float(np.sum(pbar * np.log(pbar))) + np.log(k)


def _cosines(rng, shape):
    return np.tanh(rng.normal(size=shape)).astype(np.float32)


def test_cross_view_loss_matches_numpy():
    rng = np.random.default_rng(2)
    s, t = _cosines(rng, (3, 4, 4, 5)), _cosines(rng, (3, 4, 4, 5))
    gs = np.array([[0.0, 0.0, 0.8, 0.7, 0], [0.1, 0.2, 0.9, 1.0, 1], [0.3, 0.0, 1.0, 0.6, 1]], np.float32)
    gt = np.array([[0.2, 0.3, 1.0, 1.0, 1], [0.0, 0.0, 0.6, 0.7, 0], [0.0, 0.1, 0.8, 0.9, 0]], np.float32)
    got = losses.cross_view_clustering_loss(s, t, gs, gt)
    np.testing.assert_allclose(float(got), np_cross_view_loss(s, t, gs, gt), rtol=1e-5)


def test_cross_view_loss_is_the_same_view_loss_for_identical_views():
    rng = np.random.default_rng(3)
    s, t = _cosines(rng, (2, 3, 3, 4)), _cosines(rng, (2, 3, 3, 4))
    g = np.array([[0.1, 0.2, 0.7, 0.9, 1], [0.0, 0.0, 1.0, 1.0, 0]], np.float32)
    cross = losses.cross_view_clustering_loss(s, t, g, g, sinkhorn_epsilon=0.05)
    same = losses.clustering_loss(s.reshape(-1, 4), t.reshape(-1, 4), sinkhorn_epsilon=0.05)
    np.testing.assert_allclose(float(cross), float(same), rtol=1e-6)


def test_cross_view_loss_without_overlap_is_the_entropy_term_and_has_student_gradient_only():
    rng = np.random.default_rng(4)
    s, t = tf.constant(_cosines(rng, (2, 3, 3, 4))), tf.constant(_cosines(rng, (2, 3, 3, 4)))
    left = np.array([[0.0, 0.0, 1.0, 0.4, 0]] * 2, np.float32)
    right = np.array([[0.0, 0.6, 1.0, 1.0, 0]] * 2, np.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([s, t])
        loss = losses.cross_view_clustering_loss(s, t, left, right)
    pbar = _softmax(s.numpy().reshape(-1, 4) / 0.1).mean(axis=0)
    np.testing.assert_allclose(float(loss), np.sum(pbar * np.log(pbar)) + np.log(4), rtol=1e-5)
    assert tape.gradient(loss, t) is None
    assert np.abs(tape.gradient(loss, s).numpy()).sum() > 0


# Pipeline and model --------------------------------------------------------------------------
def expected_source(geometry, size=SIZE):
    """NumPy: source (row, col) fractions of every pixel centre of a view, from its geometry."""
    y0, x0, y1, x1, flipped = geometry
    v = (np.arange(size) + 0.5) / size
    u = (np.arange(size) + 0.5) / size
    u = 1.0 - u if flipped > 0.5 else u
    rows = np.broadcast_to((y0 + v * (y1 - y0))[:, None], (size, size))
    cols = np.broadcast_to((x0 + u * (x1 - x0))[None, :], (size, size))
    return np.stack([rows, cols], axis=-1)


@pytest.mark.parametrize("on_device", ["false", "true"])
def test_pipeline_geometry_describes_the_views(tmp_path, on_device):
    """Both augmentation paths: each view's pixels come from where its geometry says."""
    from fra_keras.data.pipeline import pretraining_dataset

    Image.fromarray(ramp_image()).save(tmp_path / "ramp.png")
    config = geometric_config(batch_size=4)
    batch = next(iter(pretraining_dataset(config, data_dir=str(tmp_path), augment_on_device=on_device)))
    assert ("view1_params" in batch) == (on_device == "true")
    batch = device_augment.augment_views(batch, config)
    assert batch["view1_geometry"].shape == (4, 5)
    for view in device_augment.VIEWS:
        images = augment.denormalize(batch[view], config).numpy()
        for n in range(4):
            got = source_fractions(images[n])[8:-8, 8:-8]     # away from the clipped border pixels
            want = expected_source(batch[view + "_geometry"].numpy()[n])[8:-8, 8:-8]
            np.testing.assert_allclose(got, want, atol=3.0 / 255)


@pytest.mark.parametrize("overrides", [dict(cluster_targets="same_view"), dict(region_losses=False)],
                         ids=["same-view", "no-region-losses"])
def test_pipeline_adds_geometry_only_when_the_loss_uses_it(tmp_path, overrides):
    """The tiny preset's batches carry geometry (cross-view targets); with same-view targets (the
    reference) or without the region losses (plain BYOL) they are the two views alone."""
    from fra_keras.data.pipeline import pretraining_dataset

    Image.fromarray(ramp_image()).save(tmp_path / "ramp.png")
    keys = {}
    for name, fields in (("default", {}), ("other", overrides)):
        config = FRAConfig.from_preset("tiny", batch_size=2, image_size=SIZE, **fields)
        batch = next(iter(pretraining_dataset(config, data_dir=str(tmp_path), augment_on_device="false")))
        keys[name] = sorted(batch)
    assert keys["default"] == ["view1", "view1_geometry", "view2", "view2_geometry"]
    assert keys["other"] == ["view1", "view2"]


def _batch(rng, b=4, size=64):
    views = {v: tf.constant(rng.normal(size=(b, size, size, 3)).astype(np.float32)) for v in device_augment.VIEWS}
    geometry = np.array([[0.0, 0.0, 0.8, 0.8, 0], [0.2, 0.2, 1.0, 1.0, 1]] * (b // 2), np.float32)
    return views, geometry


@pytest.mark.parametrize("student_temperature", [0.1, 0.12])
def test_fra_step_with_cross_view_targets(student_temperature):
    """The model's clustering term is `cross_view_clustering_loss` from student view a to teacher view b,
    at the config's student temperature (0.1, the reference; 0.12, the opt-in of docs/method.md,
    "Student temperature")."""
    rng = np.random.default_rng(5)
    views, geometry = _batch(rng)
    model = tiny_model(0, cluster_targets="cross_view", decoder_dropout=0.0,
                       student_temperature=student_temperature)
    assert model.config.student_temperature == student_temperature
    model.compile(run_eagerly=True)   # eager: tracing the step costs a minute on 2 cores
    data = {**views, "view1_geometry": geometry, "view2_geometry": geometry[::-1].copy()}
    out = model.test_step(data)
    online = [model._run_network(model.backbone, model.neck, views[v], False) for v in device_augment.VIEWS]
    target = [model._run_network(model.target_backbone, model.target_neck, views[v], False)
              for v in device_augment.VIEWS]
    c = model.config
    kw = dict(student_temperature=c.student_temperature, teacher_temperature=c.teacher_temperature,
              sinkhorn_epsilon=c.sinkhorn_epsilon)
    want = 0.5 * sum(float(losses.cross_view_clustering_loss(
        online[a]["logits"], target[1 - a]["logits"], data[f"view{a + 1}_geometry"],
        data[f"view{2 - a}_geometry"], **kw)) for a in (0, 1))
    np.testing.assert_allclose(float(out["loss_cluster"]), want, rtol=1e-4)
    logs = model.train_on_batch(data, return_dict=True)
    assert np.isfinite(logs["loss"])


def test_fra_cross_view_without_geometry_is_a_clear_error():
    rng = np.random.default_rng(6)
    views, _ = _batch(rng)
    model = tiny_model(0, cluster_targets="cross_view")
    model.compile()
    with pytest.raises(ValueError, match="cluster_targets='cross_view' needs batches with"):
        model.train_on_batch(views)


def test_whole_image_geometry_gives_the_same_view_loss():
    """`whole_image_geometry` (the geometry of a view that is its whole source image) maps every cell to
    the same cell: on a hand-made pair of identical views the cross-view step's loss equals the
    same-view step's. Its rows are [0, 0, 1, 1, 0]."""
    from fra_keras.data.augment import whole_image_geometry

    geometry = whole_image_geometry(3).numpy()
    np.testing.assert_array_equal(geometry, np.tile([[0.0, 0.0, 1.0, 1.0, 0.0]], (3, 1)))
    views = two_view_batch(4, seed=7)
    views["view2"] = views["view1"]
    losses = {}
    for targets in ("same_view", "cross_view"):
        model = tiny_model(0, cluster_targets=targets, decoder_dropout=0.0)
        model.compile()
        batch = dict(views)
        if targets == "cross_view":
            batch.update({v + "_geometry": whole_image_geometry(4) for v in ("view1", "view2")})
        losses[targets] = model.test_on_batch(batch, return_dict=True)
    for key in ("loss", "loss_cluster"):
        np.testing.assert_allclose(losses["cross_view"][key], losses["same_view"][key], rtol=1e-5)
    assert losses["same_view"]["loss_cluster"] > 0


def test_cluster_targets_config():
    assert FRAConfig.from_preset("paper").cluster_targets == "same_view"
    tiny = FRAConfig.from_preset("tiny")   # the tiny default: docs/evaluation.md, "Cross-view clustering targets"
    assert (tiny.cluster_targets, tiny.cluster_loss_weight) == ("cross_view", 2.0)
    with pytest.raises(ConfigError, match="cluster_targets='other'.*same_view.*cross_view"):
        tiny_config(cluster_targets="other").validate()
