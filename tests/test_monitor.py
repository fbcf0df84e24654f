"""Tests for the region-health monitor (`fra_keras.monitor`) against NumPy recomputations."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import tensorflow as tf
from harness import tiny_config

from fra_keras import losses
from fra_keras.data.augment import normalize
from fra_keras.downstream.metrics import knn_accuracy
from fra_keras.models.fra import FRA
from fra_keras.monitor import MONITOR_KEYS, RegionMonitor, held_out_faces, region_health, usage_entropy


# The tiny test model (tests/harness.py) with 4 regions and a small 64-px synthetic set.
MONITOR = dict(synthetic_size=64, synthetic_samples=8, epochs=2, warmup_epochs=1, num_regions=4)


def _tiny(**overrides):
    return tiny_config(**{**MONITOR, **overrides})


def test_mean_pairwise_cosine_matches_numpy():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 7)).astype("float32")
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    gram = u @ u.T
    expected = (gram.sum() - np.trace(gram)) / (5 * 4)
    assert float(losses.mean_pairwise_cosine(e)) == pytest.approx(expected, rel=1e-5)
    same = np.tile(e[:1], (4, 1))
    assert float(losses.mean_pairwise_cosine(same)) == pytest.approx(1.0, abs=1e-6)


def test_usage_entropy_matches_numpy():
    a = np.zeros((2, 2, 2, 4))
    a[..., 0] = 1.0                       # region 0 wins every pixel
    assert usage_entropy(a) == pytest.approx(0.0)
    b = np.eye(4)[np.arange(8) % 4].reshape(2, 2, 2, 4)   # each region wins 2 of 8 pixels
    assert usage_entropy(b) == pytest.approx(1.0)
    c = np.eye(4)[[0, 0, 0, 1, 1, 2, 3, 3]].reshape(2, 2, 2, 4)
    share = np.array([3, 2, 1, 2]) / 8
    assert usage_entropy(c) == pytest.approx(-np.sum(share * np.log(share)) / math.log(4))


def test_held_out_faces_are_identity_disjoint_from_training():
    from fra_keras.data.synthetic import split_of_identity

    ref, ref_y, query, query_y = held_out_faces(64, num_reference=6, num_query=4)
    assert ref.shape == (6, 64, 64, 3) and query.shape == (4, 64, 64, 3)
    assert ref.dtype == np.uint8 and ref_y.shape == (6,)
    # monitor faces never come from the "train" split that synthetic pre-training renders
    from fra_keras.data.synthetic import render_sample
    ids = [int(render_sample(i, image_size=64, split="validation", profile="aligned")["identity"]) for i in range(6)]
    assert all(split_of_identity(i) == "validation" for i in ids)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    """One short fit of a tiny FRA with the monitor every step."""
    folder = tmp_path_factory.mktemp("monitor")
    tf.keras.utils.set_random_seed(0)
    config = _tiny()
    model = FRA(config)
    model.compile()
    monitor = RegionMonitor(config, every_steps=1, csv_path=str(folder / "monitor.csv"),
                            log_dir=str(folder / "tb"), num_reference=12, num_query=6, verbose=False)
    views = np.random.default_rng(0).normal(size=(4, 64, 64, 3)).astype("float32")
    ds = tf.data.Dataset.from_tensors({"view1": views, "view2": views[::-1]}).repeat()
    history = model.fit(ds, epochs=2, steps_per_epoch=2, callbacks=[monitor], verbose=0)
    return model, monitor, history, folder


def test_monitor_values_match_numpy(monitored):
    model, monitor, _, _ = monitored
    ref, ref_y, query, query_y = monitor._data
    latest = monitor.latest
    assert set(latest) == set(MONITOR_KEYS)
    # Independent recomputation from the model's own layers, in NumPy.
    feats = model.backbone(ref[:6], training=False)
    online = model.neck(feats, training=False)
    masks = online["masks"].numpy().mean(axis=0)
    unit = masks / np.linalg.norm(masks, axis=1, keepdims=True)
    k = unit.shape[0]
    expected_cos = ((unit @ unit.T).sum() - k) / (k * (k - 1))
    assert latest["monitor_mask_cosine"] == pytest.approx(expected_cos, abs=1e-5)
    pixel = online["pixel"].numpy()
    pixel = pixel / np.linalg.norm(pixel, axis=-1, keepdims=True)
    logits = pixel @ unit.T
    winners = np.argmax(logits, axis=-1).ravel()
    share = np.bincount(winners, minlength=k) / winners.size
    nz = share[share > 0]
    assert latest["monitor_region_usage"] == pytest.approx(-np.sum(nz * np.log(nz)) / math.log(k), abs=1e-6)
    embed = lambda x: model.embed(x).numpy()
    assert latest["monitor_knn_accuracy"] == pytest.approx(knn_accuracy(embed(ref), ref_y, embed(query), query_y))
    assert 0.0 <= latest["monitor_cluster_ratio"] <= 2.0
    assert region_health(model, ref[:6]) == pytest.approx({k: v for k, v in latest.items() if k != "monitor_knn_accuracy"},
                                                            abs=1e-6)


def test_monitor_logs_every_step_and_into_history(monitored):
    _, monitor, history, folder = monitored
    # one check at the start, then one per step (2 epochs x 2 steps)
    assert [h["step"] for h in monitor.history] == [0, 1, 2, 3, 4]
    with open(folder / "monitor.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]
    assert float(rows[-1]["monitor_mask_cosine"]) == pytest.approx(monitor.latest["monitor_mask_cosine"])
    for key in MONITOR_KEYS:
        assert len(history.history[key]) == 2
    assert history.history["monitor_knn_accuracy"][-1] == pytest.approx(monitor.latest["monitor_knn_accuracy"])
    assert "mask_cosine" in history.history            # the training-batch version, from train_step
    assert list((folder / "tb" / "monitor").iterdir())  # TensorBoard event file


def test_monitor_rejects_bad_interval():
    with pytest.raises(ValueError, match="every_steps=0"):
        RegionMonitor(_tiny(), every_steps=0)
