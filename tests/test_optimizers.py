"""Tests for `fra_keras.optimizers`: LARS, the exclusion rule, WarmupCosine and the EMA momentum.

NumPy references are written from docs/method.md, "Optimiser and schedules" (LARS, schedule)
and "EMA target" (EMA momentum).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import tiny_config

from fra_keras.optimizers import (LARS, WarmupCosine, build_optimizer, ema_momentum, lars_excluded,
                                   lars_group_key)

# ---------------------------------------------------------------------------------------------------
# Exclusion rule (docs/method.md, "Optimiser and schedules": names containing "bn", "downsample.1" or
# "bias" in the PyTorch naming)
# ---------------------------------------------------------------------------------------------------

EXCLUSION = [
    ("layer1_0_bn1/gamma", True),
    ("layer1_0_bn1/beta", True),
    ("bn1/gamma", True),
    ("layer4_2_bn3/gamma", True),
    ("layer2_0_downsample_bn/gamma", True),   # torchvision downsample.1.weight
    ("layer2_0_downsample_bn/beta", True),
    ("conv1/kernel", False),
    ("layer3_1_conv2/kernel", False),
    ("neck/proj/norm/gamma", False),          # MLP1D BN gamma is `mlp.1.weight`: not excluded
    ("neck/proj/norm/beta", True),            # `mlp.1.bias`
    ("neck/proj/dense1/kernel", False),
    ("predictor/norm/gamma", False),
    ("region_predictor/dense2/kernel", False),
    ("neck/mask_decoder/decoder_layer0/norm1/gamma", False),   # LayerNorm weight
    ("neck/mask_decoder/decoder_layer0/norm1/beta", True),     # LayerNorm bias
    ("neck/mask_decoder/decoder_norm/gamma", False),
    ("neck/mask_decoder/decoder_layer1/cross_attn/query/kernel", False),
    ("neck/mask_decoder/decoder_layer1/cross_attn/query/bias", True),
    ("neck/mask_decoder/decoder_layer0/linear1/bias", True),
    ("neck/mask_decoder/mask_embed2/bias", True),
    ("neck/mask_decoder/query_embed", False),
    ("query_embed", False),
    ("input_proj/bias", True),
    ("neck/mask_decoder/input_proj/kernel", False),
]


@pytest.mark.parametrize("path,expected", EXCLUSION)
def test_lars_excluded(path, expected):
    assert lars_excluded(path) is expected


def test_lars_downsample_conv_kernel_is_adapted():
    for stage in (2, 3, 4):
        assert lars_excluded(f"layer{stage}_0_downsample_conv/kernel") is False


# ---------------------------------------------------------------------------------------------------
# LARS vs NumPy, two steps
# ---------------------------------------------------------------------------------------------------


def _lars_reference(weights, grads_per_step, lrs, excluded, momentum, wd, eta, eps):
    """docs/method.md, "Optimiser and schedules", float64: u = lr*trust*(g + wd*w) (adapted) or lr*g
    (excluded); buf = m*buf + u; w = w - buf."""
    w = {k: v.astype(np.float64).copy() for k, v in weights.items()}
    buf = {k: np.zeros_like(v) for k, v in w.items()}
    for grads, lr in zip(grads_per_step, lrs):
        for k in w:
            g = grads[k].astype(np.float64)
            if excluded[k]:
                u = lr * g
            else:
                wn = np.sqrt(np.sum(w[k] ** 2))
                gn = np.sqrt(np.sum(g ** 2))
                trust = eta * wn / (gn + wd * wn + eps)
                u = lr * trust * (g + wd * w[k])
            buf[k] = momentum * buf[k] + u
            w[k] = w[k] - buf[k]
    return w


def _small_named_variables():
    """Real Keras layers named like the FRA model's, so `variable.path` drives the exclusion."""
    fc = keras.layers.Dense(4, name="fc")
    fc.build((None, 3))
    bn = keras.layers.BatchNormalization(name="layer1_0_bn1")
    bn.build((None, 4))
    ln = keras.layers.LayerNormalization(name="norm")
    ln.build((None, 4))
    q = keras.layers.Dense(4, use_bias=False, name="query_embed_proj")
    q.build((None, 4))
    variables = fc.trainable_variables + bn.trainable_variables + ln.trainable_variables + q.trainable_variables
    expected_excluded = {"fc/kernel": False, "fc/bias": True, "layer1_0_bn1/gamma": True,
                         "layer1_0_bn1/beta": True, "norm/gamma": False, "norm/beta": True,
                         "query_embed_proj/kernel": False}
    assert sorted(v.path for v in variables) == sorted(expected_excluded)
    return variables, expected_excluded


def test_lars_two_steps_match_numpy():
    rng = np.random.default_rng(0)
    variables, excluded = _small_named_variables()
    for v in variables:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    w0 = {v.path: np.array(v.numpy()) for v in variables}
    grads = [{v.path: rng.normal(scale=s, size=v.shape).astype("float32") for v in variables}
             for s in (1.0, 0.3)]
    # Per-step learning rate from a warm-up schedule: lr_0 = 0.5 * 1/2, lr_1 = 0.5 * 2/2.
    schedule = WarmupCosine(0.5, steps_per_epoch=2, epochs=3, warmup_epochs=1)
    momentum, wd, eta, eps = 0.9, 0.05, 0.02, 1e-8   # large wd / eta so that both terms matter
    opt = LARS(schedule, momentum=momentum, lars_weight_decay=wd, eta=eta, epsilon=eps)
    for step_grads in grads:
        opt.apply_gradients([(tf.constant(step_grads[v.path]), v) for v in variables])
    assert int(opt.iterations.numpy()) == 2
    expected = _lars_reference(w0, grads, [0.25, 0.5], excluded, momentum, wd, eta, eps)
    for v in variables:
        np.testing.assert_allclose(v.numpy(), expected[v.path], rtol=1e-5, atol=1e-7, err_msg=v.path)
    # Sensitivity: treating everything as excluded (plain SGD-momentum) gives a different answer.
    plain = _lars_reference(w0, grads, [0.25, 0.5], {k: True for k in excluded}, momentum, wd, eta, eps)
    assert not np.allclose(plain["fc/kernel"], expected["fc/kernel"], atol=1e-4)
    # Momentum acts on lr-scaled updates: with a constant lr the answer would differ.
    const = _lars_reference(w0, grads, [0.5, 0.5], excluded, momentum, wd, eta, eps)
    assert not np.allclose(const["fc/bias"], expected["fc/bias"], atol=1e-4)


def test_lars_excluded_variables_get_no_weight_decay():
    v = keras.Variable(np.full((3,), 2.0, "float32"), name="bias")
    w = keras.Variable(np.full((3,), 2.0, "float32"), name="kernel")
    opt = LARS(0.1, momentum=0.9, lars_weight_decay=0.5, eta=0.001)
    opt.apply_gradients([(tf.zeros(3), v), (tf.zeros(3), w)])
    np.testing.assert_array_equal(v.numpy(), 2.0)   # zero grad, no decay
    # adapted: trust = eta*|w|/(0 + wd*|w| + eps) ~ eta/wd; u = lr*trust*wd*w = lr*eta*w
    np.testing.assert_allclose(w.numpy(), 2.0 - 0.1 * 0.001 * 2.0, rtol=1e-6)


def test_lars_rejects_bad_momentum():
    with pytest.raises(ValueError, match="momentum"):
        LARS(0.1, momentum=1.0)


def test_lars_get_config_round_trip():
    schedule = WarmupCosine(0.9, steps_per_epoch=10, epochs=50, warmup_epochs=10)
    opt = LARS(schedule, momentum=0.8, lars_weight_decay=1e-5, eta=0.002, epsilon=1e-7)
    config = opt.get_config()
    for key, value in dict(momentum=0.8, lars_weight_decay=1e-5, eta=0.002, epsilon=1e-7).items():
        assert config[key] == value
    back = LARS.from_config(config)
    assert isinstance(back, LARS)
    assert (back.momentum, back.lars_weight_decay, back.eta, back.epsilon) == (0.8, 1e-5, 0.002, 1e-7)
    assert isinstance(back._learning_rate, WarmupCosine)
    assert back._learning_rate.get_config() == schedule.get_config()
    # registered: a plain keras deserialize without custom_objects works
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(again, LARS) and again.eta == 0.002


# ---------------------------------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------------------------------


def _schedule_reference(base, spe, epochs, warmup):
    out = []
    for t in range(spe * epochs):
        if t < warmup * spe:
            out.append(base * (t + 1) / (warmup * spe))
        else:
            e = t // spe
            out.append(base * 0.5 * (1 + math.cos(math.pi * (e - warmup) / (epochs - warmup))))
    return np.array(out)


@pytest.mark.parametrize("base,spe,epochs,warmup", [(0.3, 5, 4, 1), (0.9, 3, 6, 2), (1.0, 4, 3, 0),
                                                    (0.5, 7, 5, 3)])
def test_warmup_cosine_every_step(base, spe, epochs, warmup):
    schedule = WarmupCosine(base, spe, epochs, warmup)
    expected = _schedule_reference(base, spe, epochs, warmup)
    got = np.array([float(schedule(t)) for t in range(spe * epochs)])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # constant inside every cosine epoch
    for e in range(warmup, epochs):
        assert len(set(np.round(got[e * spe:(e + 1) * spe], 7))) == 1


def test_warmup_cosine_paper_recipe_end_points():
    spe = 6132
    schedule = WarmupCosine(0.9, spe, 50, 10)
    assert float(schedule(0)) == pytest.approx(0.9 / (10 * spe), rel=1e-5)
    assert float(schedule(10 * spe - 1)) == pytest.approx(0.9, rel=1e-5)
    assert float(schedule(10 * spe)) == pytest.approx(0.9, rel=1e-5)
    last = 0.9 * 0.5 * (1 + math.cos(math.pi * 39 / 40))
    assert float(schedule(50 * spe - 1)) == pytest.approx(last, rel=1e-4)
    assert 0.0013 < last < 0.0015


def test_warmup_cosine_get_config_round_trip():
    schedule = WarmupCosine(0.3, 5, 4, 1)
    back = WarmupCosine.from_config(schedule.get_config())
    assert back.get_config() == dict(base_lr=0.3, steps_per_epoch=5, epochs=4, warmup_epochs=1)
    for t in range(20):
        assert float(back(t)) == float(schedule(t))
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(again, WarmupCosine)


# ---------------------------------------------------------------------------------------------------
# EMA momentum
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base,total", [(0.996, 100), (0.99, 10), (0.9, 36)])
def test_ema_momentum_vs_numpy(base, total):
    t = np.arange(total + 1)
    expected = 1 - (1 - base) * (np.cos(np.pi * t / total) + 1) / 2
    got = np.array([float(ema_momentum(s, total, base)) for s in t])
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-7)
    assert got[0] == pytest.approx(base, abs=1e-7)
    assert got[-1] == pytest.approx(1.0, abs=1e-7)
    assert np.all(np.diff(got) >= -1e-7)
    assert got[total // 2] == pytest.approx(1 - (1 - base) / 2, abs=1e-6)


# ---------------------------------------------------------------------------------------------------
# build_optimizer
# ---------------------------------------------------------------------------------------------------


def test_build_optimizer_from_config():
    c = tiny_config(learning_rate=0.3, epochs=4, warmup_epochs=1, weight_decay=1e-5, momentum=0.85, lars_eta=0.002)
    opt = build_optimizer(c, steps_per_epoch=5)
    assert isinstance(opt, LARS)
    assert (opt.momentum, opt.lars_weight_decay, opt.eta) == (0.85, 1e-5, 0.002)
    expected = _schedule_reference(0.3, 5, 4, 1)
    got = [float(opt._learning_rate(t)) for t in range(20)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert isinstance(build_optimizer(c.replace(optimizer="sgd"), 5), keras.optimizers.SGD)
    assert isinstance(build_optimizer(c.replace(optimizer="adamw"), 5), keras.optimizers.AdamW)
    mixed = build_optimizer(c.replace(precision="mixed_float16"), 5)
    assert isinstance(mixed, keras.optimizers.LossScaleOptimizer)
    assert isinstance(mixed.inner_optimizer, LARS)


# ---------------------------------------------------------------------------------------------------
# Stacked q/k/v projections share one trust ratio (PyTorch's in_proj_weight)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path,key", [
    ("neck/mask_decoder/decoder_layer0/self_attn/query/kernel", "neck/mask_decoder/decoder_layer0/self_attn"),
    ("neck/mask_decoder/decoder_layer0/self_attn/value/kernel", "neck/mask_decoder/decoder_layer0/self_attn"),
    ("neck/mask_decoder/decoder_layer1/cross_attn/key/kernel", "neck/mask_decoder/decoder_layer1/cross_attn"),
    ("neck/mask_decoder/decoder_layer1/cross_attn/attention_output/kernel", None),
    ("neck/mask_decoder/decoder_layer1/cross_attn/query/bias", None),
    ("neck/mask_decoder/query_embed", None),
    ("neck/proj/dense1/kernel", None),
])
def test_lars_group_key(path, key):
    assert lars_group_key(path) == key


def _attention_variables():
    """A real Keras MultiHeadAttention (kernels q/k/v/out) plus one plain kernel."""
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="self_attn")
    mha.build((None, 4, 6), (None, 5, 6), (None, 5, 6))
    fc = keras.layers.Dense(2, use_bias=False, name="fc")
    fc.build((None, 6))
    return mha.trainable_variables + fc.trainable_variables


def test_lars_attention_group_matches_stacked_numpy():
    """One LARS step on q/k/v kernels equals one step on their stacked matrix (docs/method.md,
    "Deliberate deviations and extensions", item 5, on `in_proj_weight`); the output projection, the
    biases and other kernels keep their own ratios."""
    rng = np.random.default_rng(1)
    variables = _attention_variables()
    # Different scales per tensor, so that per-tensor and per-group trust ratios differ clearly.
    w_scale = {"query": 2.0, "key": 0.5, "value": 1.0}
    g_scale = {"query": 0.1, "key": 2.0, "value": 0.5}
    for v in variables:
        v.assign(rng.normal(scale=w_scale.get(v.path.split("/")[-2], 1.0), size=v.shape).astype("float32"))
    w0 = {v.path: np.array(v.numpy(), np.float64) for v in variables}
    grads = {v.path: rng.normal(scale=g_scale.get(v.path.split("/")[-2], 1.0), size=v.shape) for v in variables}
    lr, momentum, wd, eta, eps = 0.7, 0.9, 0.05, 0.02, 1e-8
    opt = LARS(lr, momentum=momentum, lars_weight_decay=wd, eta=eta, epsilon=eps)
    opt.apply_gradients([(tf.constant(grads[v.path], tf.float32), v) for v in variables])

    stacked = [p for p in w0 if lars_group_key(p) is not None]
    assert sorted(p.split("/")[-2] for p in stacked) == ["key", "query", "value"]
    w_norm = np.sqrt(sum(np.sum(w0[p] ** 2) for p in stacked))
    g_norm = np.sqrt(sum(np.sum(grads[p] ** 2) for p in stacked))
    group_trust = eta * w_norm / (g_norm + wd * w_norm + eps)
    for v in variables:
        w, g = w0[v.path], grads[v.path]
        if lars_excluded(v.path):
            expected = w - lr * g
        else:
            if v.path in stacked:
                trust = group_trust
            else:
                trust = eta * np.linalg.norm(w) / (np.linalg.norm(g) + wd * np.linalg.norm(w) + eps)
            expected = w - lr * trust * (g + wd * w)
        np.testing.assert_allclose(v.numpy(), expected, rtol=2e-5, atol=1e-7, err_msg=v.path)
    # The check can fail: per-tensor trust ratios would move the query kernel differently.
    q = next(p for p in stacked if "/query/" in p)
    own = eta * np.linalg.norm(w0[q]) / (np.linalg.norm(grads[q]) + wd * np.linalg.norm(w0[q]) + eps)
    assert abs(own - group_trust) / group_trust > 0.5
