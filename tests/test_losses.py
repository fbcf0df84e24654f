"""Tests for `fra_keras.losses` (docs/method.md, "Losses"; docs/design.md, "Contracts").

The NumPy references below are written from the formulas of docs/method.md, "Neck and heatmaps"
(heatmaps, WAP), "Losses" and "Clustering loss and Sinkhorn", in float64 and with explicit loops where
that makes them obviously right. They are deliberately not transcriptions of the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from fra_keras import losses

RTOL = 1e-5
ATOL = 1e-6
FLOOR = 1e-7  # `obj_attn = softmax(dots) + 1e-7`


def _rng(seed):
    return np.random.default_rng(seed)


def _np(x):
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float64)


def _assert_f32(x):
    assert tf.convert_to_tensor(x).dtype == tf.float32


# ----------------------------------------------------------------------------------------------------
# NumPy references, written from docs/method.md, "Formulas (the reference recipe)"
# ----------------------------------------------------------------------------------------------------


def _l2n(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ref_cosine_loss(pred, target):
    """docs/method.md, "Losses": 2 - (2/B) sum_i <n(p_i), n(t_i)> (rows = every leading index)."""
    p = _l2n(pred).reshape(-1, pred.shape[-1])
    t = _l2n(target).reshape(-1, target.shape[-1])
    total = 0.0
    for i in range(p.shape[0]):
        total += float(np.dot(p[i], t[i]))
    return 2.0 - 2.0 * total / p.shape[0]


def ref_region_terms(pred, target):
    """docs/method.md, "Losses": returns (L_pos, L_neg) with explicit loops over i, k, j != k."""
    p = _l2n(pred)
    t = _l2n(target)
    b, k, _ = p.shape
    pos = 0.0
    for i in range(b):
        for kk in range(k):
            pos += float(np.dot(p[i, kk], t[i, kk]))
    l_pos = 2.0 - 2.0 * pos / (b * k)
    neg = 0.0
    for i in range(b):
        for kk in range(k):
            inner = 0.0
            for j in range(k):
                if j == kk:
                    continue
                c = float(np.dot(p[i, kk], t[i, j]))  # C_i[k, j] = <p_ik, t_ij>
                inner += c * c
            neg += inner / k
    l_neg = neg / (b * k)
    return l_pos, l_neg


def ref_region_loss(pred, target, w=0.02):
    l_pos, l_neg = ref_region_terms(pred, target)
    return l_pos + w * l_neg


def ref_sinkhorn(p, iterations=3):
    """docs/method.md, "Clustering loss and Sinkhorn": `distributed_sinkhorn` on probabilities, step by
    step (single device)."""
    q = np.asarray(p, np.float64).T.copy()  # (K, N)
    k, n = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)  # rows (prototypes)
        q /= k
        q /= q.sum(axis=0, keepdims=True)  # columns (samples)
        q /= n
    q *= n
    return q.T


def _softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def ref_clustering_terms(s, t, tau_s=0.1, tau_t=0.04, iters=3):
    """docs/method.md, "Clustering loss and Sinkhorn": returns (CE, R) for one view; no centering."""
    targets = ref_sinkhorn(_softmax(np.asarray(t, np.float64) / tau_t), iters)
    log_p = _log_softmax(np.asarray(s, np.float64) / tau_s)
    n, k = log_p.shape
    ce = 0.0
    for i in range(n):
        for j in range(k):
            ce += -targets[i, j] * log_p[i, j]
    ce /= n
    pbar = np.exp(log_p).mean(axis=0)
    r = float(np.sum(pbar * np.log(pbar))) + math.log(k)
    return ce, r


def ref_region_logits(pix, masks):
    pix = _l2n(pix)
    masks = _l2n(masks)
    b, h, w, _ = pix.shape
    if masks.ndim == 2:
        masks = np.broadcast_to(masks, (b,) + masks.shape)
    k = masks.shape[1]
    out = np.zeros((b, h, w, k))
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                for kk in range(k):
                    out[bi, y, x, kk] = np.dot(pix[bi, y, x], masks[bi, kk])
    return out


def ref_region_attention(logits, scale=1.0):
    return _softmax(np.asarray(logits, np.float64) / scale, axis=-1) + FLOOR


def ref_region_features(feat, att):
    """docs/method.md, "Neck and heatmaps": A[b,k] = M[b,k] / sum_hw M[b,k]; r[b,k] = sum_hw A[b,k,hw] F[b,hw]."""
    feat = np.asarray(feat, np.float64)
    att = np.asarray(att, np.float64)
    b, h, w, c = feat.shape
    k = att.shape[-1]
    out = np.zeros((b, k, c))
    for bi in range(b):
        for kk in range(k):
            total = att[bi, :, :, kk].sum()
            for y in range(h):
                for x in range(w):
                    out[bi, kk] += att[bi, y, x, kk] / total * feat[bi, y, x]
    return out


def _orthonormal_regions(rng, b, k, d):
    out = np.zeros((b, k, d))
    for i in range(b):
        qmat, _ = np.linalg.qr(rng.normal(size=(d, k)))
        out[i] = qmat.T
    return out


# ----------------------------------------------------------------------------------------------------
# cosine_regression_loss (docs/method.md, "Losses")
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 16), (3, 4, 8), (1, 5)])
def test_cosine_loss_matches_reference(shape):
    rng = _rng(0)
    pred = rng.normal(size=shape).astype(np.float32)
    target = rng.normal(size=shape).astype(np.float32)
    out = losses.cosine_regression_loss(pred, target)
    _assert_f32(out)
    assert out.shape == ()
    np.testing.assert_allclose(_np(out), ref_cosine_loss(pred, target), rtol=RTOL, atol=ATOL)


def test_cosine_loss_identical_and_positively_scaled_are_zero():
    rng = _rng(1)
    x = rng.normal(size=(8, 32)).astype(np.float32)
    scale = rng.uniform(0.1, 50.0, size=(8, 1)).astype(np.float32)
    np.testing.assert_allclose(_np(losses.cosine_regression_loss(x, x)), 0.0, atol=1e-6)
    np.testing.assert_allclose(_np(losses.cosine_regression_loss(x, x * scale)), 0.0, atol=1e-6)
    np.testing.assert_allclose(_np(losses.cosine_regression_loss(x * scale, x)), 0.0, atol=1e-6)


def test_cosine_loss_opposite_is_four_and_orthogonal_is_two():
    rng = _rng(2)
    x = rng.normal(size=(5, 12)).astype(np.float32)
    np.testing.assert_allclose(_np(losses.cosine_regression_loss(x, -3.0 * x)), 4.0, rtol=1e-6)
    e = np.eye(4, dtype=np.float32)
    np.testing.assert_allclose(_np(losses.cosine_regression_loss(e, np.roll(e, 1, axis=1))), 2.0,
                               rtol=1e-6)


def test_cosine_loss_is_mean_not_sum_over_rows():
    # Half the rows identical (cos 1), half opposite (cos -1): mean cos 0 -> loss 2.
    rng = _rng(3)
    x = rng.normal(size=(6, 7)).astype(np.float32)
    y = x.copy()
    y[3:] *= -1.0
    np.testing.assert_allclose(_np(losses.cosine_regression_loss(x, y)), 2.0, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------
# region_loss (docs/method.md, "Losses")
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("w", [0.02, 0.0, 1.0, 3.5])
def test_region_loss_matches_loop_reference(w):
    rng = _rng(10)
    pred = rng.normal(size=(3, 5, 16)).astype(np.float32)
    target = (0.5 * pred + rng.normal(size=(3, 5, 16))).astype(np.float32)
    out = losses.region_loss(pred, target, decorrelation_weight=w)
    _assert_f32(out)
    assert out.shape == ()
    np.testing.assert_allclose(_np(out), ref_region_loss(pred, target, w), rtol=RTOL, atol=ATOL)


def test_region_loss_default_weight_is_0_02():
    rng = _rng(11)
    pred = rng.normal(size=(2, 4, 8)).astype(np.float32)
    target = rng.normal(size=(2, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(_np(losses.region_loss(pred, target)),
                               ref_region_loss(pred, target, 0.02), rtol=RTOL, atol=ATOL)


def test_region_loss_zero_for_identical_orthogonal_regions():
    rng = _rng(12)
    regions = _orthonormal_regions(rng, 3, 6, 16)
    scale = rng.uniform(0.5, 4.0, size=(3, 6, 1))
    pred = (regions * scale).astype(np.float32)
    target = regions.astype(np.float32)
    for w in (0.02, 1.0, 10.0):
        np.testing.assert_allclose(_np(losses.region_loss(pred, target, decorrelation_weight=w)), 0.0,
                                   atol=1e-5)


def test_region_loss_decorrelation_positive_for_correlated_regions():
    # All K regions of an image share one direction, pred == target: L_pos = 0 and
    # L_neg = (1/(B K)) sum_{i,k} (1/K) (K - 1) = (K - 1) / K exactly.
    rng = _rng(13)
    b, k, d = 2, 4, 8
    v = rng.normal(size=(b, 1, d))
    x = np.repeat(v, k, axis=1).astype(np.float32)
    w = 0.5
    out = _np(losses.region_loss(x, x, decorrelation_weight=w))
    np.testing.assert_allclose(out, w * (k - 1) / k, rtol=1e-5)
    assert _np(losses.region_loss(x, x, decorrelation_weight=0.0)) == pytest.approx(0.0, abs=1e-6)
    # Random (correlated) regions: negative term strictly positive.
    pred = rng.normal(size=(b, k, d)).astype(np.float32)
    target = rng.normal(size=(b, k, d)).astype(np.float32)
    neg = _np(losses.region_loss(pred, target, 1.0)) - _np(losses.region_loss(pred, target, 0.0))
    assert neg > 1e-3


def test_region_loss_weight_scales_only_negative_term():
    rng = _rng(14)
    pred = rng.normal(size=(4, 3, 10)).astype(np.float32)
    target = rng.normal(size=(4, 3, 10)).astype(np.float32)
    l_pos, l_neg = ref_region_terms(pred, target)
    base = _np(losses.region_loss(pred, target, 0.0))
    np.testing.assert_allclose(base, l_pos, rtol=RTOL, atol=ATOL)
    for w in (0.02, 0.7, 5.0):
        delta = _np(losses.region_loss(pred, target, w)) - base
        np.testing.assert_allclose(delta, w * l_neg, rtol=1e-4, atol=1e-6)


def test_region_loss_diagonal_excluded_from_negative_term():
    # pred == target with orthonormal regions except one pair: only off-diagonal entries count.
    rng = _rng(15)
    regions = _orthonormal_regions(rng, 1, 3, 6)
    target = regions.copy()
    pred = regions.copy()
    pred[0, 0] = regions[0, 0] + regions[0, 1]  # <p_0, t_1> = 1/sqrt(2) after normalisation
    l_pos, l_neg = ref_region_terms(pred, target)
    # C[0,1] = 1/sqrt2 -> (1/K) * 1/2 summed over one (k, j) pair, / (B K) -> 1/(2 K^2)
    np.testing.assert_allclose(l_neg, 1.0 / (2 * 9), rtol=1e-12)
    np.testing.assert_allclose(_np(losses.region_loss(pred, target, 1.0)), l_pos + l_neg, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# sinkhorn (docs/method.md, "Clustering loss and Sinkhorn")
# ----------------------------------------------------------------------------------------------------


def _random_probs(rng, n, k, temp=0.04, skew=True):
    logits = rng.uniform(-1.0, 1.0, size=(n, k))
    if skew:
        logits[:, 0] += 0.1  # a preferred prototype, so the input is far from balanced
    return _softmax(logits / temp).astype(np.float32)


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_sinkhorn_matches_reference(iterations):
    rng = _rng(20)
    p = _random_probs(rng, 60, 8, temp=0.2)
    out = losses.sinkhorn(p, iterations=iterations)
    _assert_f32(out)
    assert out.shape == (60, 8)
    np.testing.assert_allclose(_np(out), ref_sinkhorn(p, iterations), rtol=1e-5, atol=1e-7)


def test_sinkhorn_default_is_three_iterations():
    rng = _rng(21)
    p = _random_probs(rng, 40, 5, temp=0.3)
    np.testing.assert_allclose(_np(losses.sinkhorn(p)), ref_sinkhorn(p, 3), rtol=1e-5, atol=1e-7)
    # and 3 iterations is actually distinguishable from 1 here
    assert np.max(np.abs(ref_sinkhorn(p, 3) - ref_sinkhorn(p, 1))) > 1e-3


def test_sinkhorn_rows_sum_to_one_nonnegative_and_columns_balance():
    rng = _rng(22)
    n, k = 98, 8
    p = _random_probs(rng, n, k, temp=0.2)
    imbalance = []
    for iters in (1, 3, 10, 30):
        q = _np(losses.sinkhorn(p, iterations=iters))
        assert np.all(q >= 0.0)
        np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
        imbalance.append(np.max(np.abs(q.sum(axis=0) - n / k)) / (n / k))
    input_imbalance = np.max(np.abs(p.sum(axis=0) - n / k)) / (n / k)
    assert imbalance[0] < input_imbalance
    assert imbalance[0] > imbalance[1] > imbalance[2] >= imbalance[3] - 1e-6
    assert imbalance[3] < 1e-3


def test_sinkhorn_scale_invariant():
    rng = _rng(23)
    p = _random_probs(rng, 30, 6, temp=0.3)
    a = _np(losses.sinkhorn(p))
    for c in (1e-3, 7.0, 250.0):
        np.testing.assert_allclose(_np(losses.sinkhorn(p * np.float32(c))), a, rtol=1e-5, atol=1e-7)


def test_sinkhorn_already_balanced_uniform_is_fixed_point():
    q = _np(losses.sinkhorn(np.full((12, 4), 0.25, np.float32)))
    np.testing.assert_allclose(q, 0.25, rtol=1e-6)


def test_sinkhorn_has_no_gradient():
    rng = _rng(24)
    x = tf.Variable(_random_probs(rng, 20, 4, temp=0.5))
    w = tf.constant(rng.normal(size=(20, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(losses.sinkhorn(x) * w)
    g = tape.gradient(y, x)
    assert g is None or np.all(_np(g) == 0.0)


# ----------------------------------------------------------------------------------------------------
# clustering_loss (docs/method.md, "Clustering loss and Sinkhorn")
# ----------------------------------------------------------------------------------------------------


def _cosine_logits(rng, n, k):
    return rng.uniform(-1.0, 1.0, size=(n, k)).astype(np.float32)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"student_temperature": 0.2, "teacher_temperature": 0.07, "sinkhorn_iterations": 5},
        {"sinkhorn_iterations": 1, "me_max_weight": 0.3},
    ],
)
def test_clustering_loss_matches_reference(kwargs):
    rng = _rng(30)
    s = _cosine_logits(rng, 2 * 49, 8)
    t = np.clip(s + 0.3 * rng.normal(size=s.shape), -1, 1).astype(np.float32)
    ce, r = ref_clustering_terms(
        s, t,
        tau_s=kwargs.get("student_temperature", 0.1),
        tau_t=kwargs.get("teacher_temperature", 0.04),
        iters=kwargs.get("sinkhorn_iterations", 3),
    )
    out = losses.clustering_loss(s, t, **kwargs)
    _assert_f32(out)
    assert out.shape == ()
    expected = ce + kwargs.get("me_max_weight", 1.0) * r
    np.testing.assert_allclose(_np(out), expected, rtol=RTOL, atol=1e-5)


def test_clustering_loss_cross_entropy_part_alone():
    rng = _rng(31)
    s = _cosine_logits(rng, 64, 6)
    t = _cosine_logits(rng, 64, 6)
    ce, r = ref_clustering_terms(s, t)
    assert r > 1e-4  # the me-max term is not negligible here, so the split is tested
    np.testing.assert_allclose(_np(losses.clustering_loss(s, t, me_max_weight=0.0)), ce,
                               rtol=RTOL, atol=1e-5)
    me = _np(losses.clustering_loss(s, t, me_max_weight=1.0)) - _np(
        losses.clustering_loss(s, t, me_max_weight=0.0))
    np.testing.assert_allclose(me, r, rtol=1e-4, atol=1e-5)


def _me_max_term(s, t):
    return _np(losses.clustering_loss(s, t, me_max_weight=1.0)) - _np(
        losses.clustering_loss(s, t, me_max_weight=0.0))


def test_clustering_me_max_zero_for_uniform_usage():
    rng = _rng(32)
    k = 8
    t = _cosine_logits(rng, 3 * k, k)
    # (a) every pixel uniform over regions
    s_flat = np.zeros((3 * k, k), np.float32)
    np.testing.assert_allclose(_me_max_term(s_flat, t), 0.0, atol=1e-6)
    # (b) each pixel confident (one-hot after /0.1) but regions used equally often
    s_onehot = np.full((3 * k, k), -1.0, np.float32)
    for i in range(3 * k):
        s_onehot[i, i % k] = 1.0
    np.testing.assert_allclose(_me_max_term(s_onehot, t), 0.0, atol=1e-6)


def test_clustering_me_max_is_log_k_for_collapsed_usage():
    rng = _rng(33)
    for k in (4, 8):
        s = np.full((40, k), -1.0, np.float32)
        s[:, 2] = 1.0  # softmax(s / 0.1) puts 1 - O(e^-20) on region 2 for every pixel
        t = _cosine_logits(rng, 40, k)
        np.testing.assert_allclose(_me_max_term(s, t), math.log(k), rtol=0, atol=1e-5)
        np.testing.assert_allclose(losses.max_entropy(k), math.log(k))


def test_clustering_loss_no_gradient_to_teacher_nonzero_to_student():
    rng = _rng(34)
    s = tf.Variable(_cosine_logits(rng, 50, 8))
    t = tf.Variable(_cosine_logits(rng, 50, 8))
    with tf.GradientTape(persistent=True) as tape:
        loss = losses.clustering_loss(s, t)
    g_t = tape.gradient(loss, t)
    g_s = tape.gradient(loss, s)
    assert g_t is None or np.all(_np(g_t) == 0.0)
    assert g_s is not None
    g_s = _np(g_s)
    assert np.all(np.isfinite(g_s))
    assert np.max(np.abs(g_s)) > 1e-4


def test_clustering_student_gradient_matches_finite_differences():
    # The analytic student gradient of CE + R (targets constant) against central differences in float64.
    rng = _rng(35)
    n, k = 12, 4
    s = _cosine_logits(rng, n, k)
    t = _cosine_logits(rng, n, k)
    sv = tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = losses.clustering_loss(sv, t)
    g = _np(tape.gradient(loss, sv))
    eps = 1e-5
    fd = np.zeros((n, k))
    for i in range(n):
        for j in range(k):
            sp = s.astype(np.float64).copy()
            sm = sp.copy()
            sp[i, j] += eps
            sm[i, j] -= eps
            fd[i, j] = (sum(ref_clustering_terms(sp, t)) - sum(ref_clustering_terms(sm, t))) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-4)


def test_clustering_loss_graph_mode_matches_eager():
    rng = _rng(36)
    s = _cosine_logits(rng, 30, 5)
    t = _cosine_logits(rng, 30, 5)
    eager = _np(losses.clustering_loss(s, t))
    graph = _np(tf.function(losses.clustering_loss)(tf.constant(s), tf.constant(t)))
    np.testing.assert_allclose(graph, eager, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------
# region_logits / region_attention / region_features (docs/method.md, "Neck and heatmaps")
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_image", [True, False])
def test_region_logits_matches_reference(per_image):
    rng = _rng(40)
    pix = rng.normal(size=(2, 3, 4, 8)).astype(np.float32)
    masks = rng.normal(size=(2, 5, 8) if per_image else (5, 8)).astype(np.float32)
    out = losses.region_logits(pix, masks)
    _assert_f32(out)
    assert out.shape == (2, 3, 4, 5)
    np.testing.assert_allclose(_np(out), ref_region_logits(pix, masks), rtol=RTOL, atol=1e-6)


def test_region_logits_range_and_scale_invariance():
    rng = _rng(41)
    pix = rng.normal(size=(2, 4, 4, 16)).astype(np.float32)
    masks = rng.normal(size=(2, 6, 16)).astype(np.float32)
    out = _np(losses.region_logits(pix, masks))
    assert np.all(out <= 1.0 + 1e-6) and np.all(out >= -1.0 - 1e-6)
    pix_scale = rng.uniform(0.01, 100.0, size=(2, 4, 4, 1)).astype(np.float32)
    mask_scale = rng.uniform(0.01, 100.0, size=(2, 6, 1)).astype(np.float32)
    scaled = _np(losses.region_logits(pix * pix_scale, masks * mask_scale))
    np.testing.assert_allclose(scaled, out, rtol=1e-5, atol=1e-6)
    # exact +-1 when a pixel embedding is (anti)parallel to a mask embedding
    pix2 = pix.copy()
    pix2[0, 1, 2] = 3.0 * masks[0, 4]
    pix2[1, 0, 0] = -0.5 * masks[1, 2]
    out2 = _np(losses.region_logits(pix2, masks))
    np.testing.assert_allclose(out2[0, 1, 2, 4], 1.0, atol=1e-6)
    np.testing.assert_allclose(out2[1, 0, 0, 2], -1.0, atol=1e-6)


def test_region_logits_shared_and_per_image_masks_agree():
    rng = _rng(42)
    pix = rng.normal(size=(3, 2, 5, 8)).astype(np.float32)
    shared = rng.normal(size=(4, 8)).astype(np.float32)
    tiled = np.repeat(shared[None], 3, axis=0)
    np.testing.assert_allclose(_np(losses.region_logits(pix, shared)),
                               _np(losses.region_logits(pix, tiled)), rtol=1e-6, atol=1e-7)
    # per-image masks really are per image (image b uses masks[b])
    per_image = rng.normal(size=(3, 4, 8)).astype(np.float32)
    out = _np(losses.region_logits(pix, per_image))
    for b in range(3):
        np.testing.assert_allclose(out[b], _np(losses.region_logits(pix[b:b + 1], per_image[b]))[0],
                                   rtol=1e-5, atol=1e-6)


def test_region_attention_matches_reference_and_sums():
    rng = _rng(43)
    k = 8
    logits = rng.uniform(-1, 1, size=(2, 7, 7, k)).astype(np.float32)
    att = losses.region_attention(logits)
    _assert_f32(att)
    assert att.shape == logits.shape
    a = _np(att)
    np.testing.assert_allclose(a, ref_region_attention(logits), rtol=RTOL, atol=1e-8)
    np.testing.assert_allclose(a.sum(axis=-1), 1.0 + k * FLOOR, rtol=0, atol=1e-6)
    assert np.all(a >= FLOOR * 0.999)
    # the floor is there: with extreme logits the small entries are ~1e-7, not 0
    ext = np.zeros((1, 1, 1, 4), np.float32)
    ext[..., 0] = 100.0
    e = _np(losses.region_attention(ext))
    np.testing.assert_allclose(e[0, 0, 0, 1:], FLOOR, rtol=1e-3)


def test_region_attention_scale_is_temperature():
    rng = _rng(44)
    logits = rng.uniform(-1, 1, size=(1, 3, 3, 5)).astype(np.float32)
    for scale in (0.04, 0.5, 2.0):
        out = _np(losses.region_attention(logits, scale=scale))
        np.testing.assert_allclose(out, ref_region_attention(logits, scale), rtol=RTOL, atol=1e-8)
        np.testing.assert_allclose(out, _np(losses.region_attention(logits / np.float32(scale))),
                                   rtol=1e-5, atol=1e-8)
    # lower temperature -> sharper heatmaps (larger max probability)
    sharp = _np(losses.region_attention(logits, scale=0.1)).max(axis=-1)
    soft = _np(losses.region_attention(logits, scale=1.0)).max(axis=-1)
    assert np.all(sharp > soft)


def test_region_features_matches_reference():
    rng = _rng(45)
    feat = rng.normal(size=(2, 3, 4, 6)).astype(np.float32)
    att = rng.uniform(0.0, 1.0, size=(2, 3, 4, 5)).astype(np.float32) + np.float32(FLOOR)
    out = losses.region_features(feat, att)
    _assert_f32(out)
    assert out.shape == (2, 5, 6)
    np.testing.assert_allclose(_np(out), ref_region_features(feat, att), rtol=RTOL, atol=1e-6)


def test_region_features_normalises_each_heatmap_over_space():
    rng = _rng(46)
    feat = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    att = rng.uniform(0.1, 1.0, size=(2, 3, 3, 5)).astype(np.float32)
    scale = rng.uniform(0.01, 100.0, size=(2, 1, 1, 5)).astype(np.float32)  # per (image, region)
    np.testing.assert_allclose(_np(losses.region_features(feat, att * scale)),
                               _np(losses.region_features(feat, att)), rtol=1e-5, atol=1e-6)


def test_region_features_constant_map_returns_the_feature():
    rng = _rng(47)
    vec = rng.normal(size=(2, 1, 1, 6)).astype(np.float32)
    feat = np.broadcast_to(vec, (2, 4, 5, 6)).copy()
    att = _np(losses.region_attention(rng.normal(size=(2, 4, 5, 3)).astype(np.float32)))
    out = _np(losses.region_features(feat, att.astype(np.float32)))
    for k in range(3):
        np.testing.assert_allclose(out[:, k], vec[:, 0, 0], rtol=1e-5, atol=1e-6)


def test_region_features_one_hot_heatmap_picks_pixel():
    rng = _rng(48)
    b, h, w, c, k = 2, 4, 4, 5, 3
    feat = rng.normal(size=(b, h, w, c)).astype(np.float32)
    hot = [(0, 1), (3, 2), (2, 2)]
    att = np.zeros((b, h, w, k), np.float32)
    for kk, (y, x) in enumerate(hot):
        att[:, y, x, kk] = 1.0
    att += np.float32(FLOOR)  # the floor region_attention adds
    out = _np(losses.region_features(feat, att))
    for kk, (y, x) in enumerate(hot):
        np.testing.assert_allclose(out[:, kk], feat[:, y, x], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# dtypes and input types
# ----------------------------------------------------------------------------------------------------


def _inputs(rng):
    s = _cosine_logits(rng, 32, 4)
    t = _cosine_logits(rng, 32, 4)
    return {
        "cosine_regression_loss": (rng.normal(size=(6, 16)), rng.normal(size=(6, 16))),
        "region_loss": (rng.normal(size=(2, 4, 8)), rng.normal(size=(2, 4, 8))),
        "sinkhorn": (_random_probs(rng, 24, 4, temp=0.3),),
        "clustering_loss": (s, t),
        "region_logits": (rng.normal(size=(2, 3, 3, 8)), rng.normal(size=(4, 8))),
        "region_attention": (rng.uniform(-1, 1, size=(2, 3, 3, 4)),),
        "region_features": (rng.normal(size=(2, 3, 3, 5)), rng.uniform(0.05, 1.0, size=(2, 3, 3, 4))),
    }


FUNCTIONS = ["cosine_regression_loss", "region_loss", "sinkhorn", "clustering_loss", "region_logits",
             "region_attention", "region_features"]


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_inputs_give_float32_outputs(name, dtype):
    fn = getattr(losses, name)
    args = _inputs(_rng(50))[name]
    half = [tf.cast(tf.constant(a, tf.float32), dtype) for a in args]
    out = fn(*half)
    _assert_f32(out)
    # Same (rounded) values computed in float32: the math must run in float32, so agreement is tight.
    rounded = [tf.cast(h, tf.float32) for h in half]
    np.testing.assert_allclose(_np(out), _np(fn(*rounded)), rtol=1e-5, atol=1e-6)
    # And close to the float32 result on the unrounded inputs (loose: input rounding only).
    full = _np(fn(*[np.asarray(a, np.float32) for a in args]))
    tol = 2e-2 if dtype == tf.float16 else 1e-1
    if name == "clustering_loss":
        tol *= 5  # teacher logits are divided by 0.04 before the softmax
    np.testing.assert_allclose(_np(out), full, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_numpy_float64_and_tensor_inputs_agree(name):
    fn = getattr(losses, name)
    args = _inputs(_rng(51))[name]
    from_np64 = fn(*[np.asarray(a, np.float64) for a in args])
    _assert_f32(from_np64)
    from_np32 = fn(*[np.asarray(a, np.float32) for a in args])
    from_tensor = fn(*[tf.constant(a, tf.float32) for a in args])
    _assert_f32(from_np32)
    _assert_f32(from_tensor)
    np.testing.assert_allclose(_np(from_np64), _np(from_tensor), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_np(from_np32), _np(from_tensor), rtol=1e-6, atol=1e-7)
