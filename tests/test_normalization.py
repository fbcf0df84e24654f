"""The fused BatchNormalization (fra_keras/models/normalization.py) against NumPy.

Training mode: the output, the gradients of x, gamma and beta (the closed-form BatchNorm backward pass)
and the moving statistics with the *biased* batch variance, for inputs of rank 2, 3 and 4, and under
mixed precision. Where the fused kernel does not apply (inference, `fused=False`, SyncBN across two
replicas) the layer must take Keras's own path. The whole-model step with and without it is compared in
tests/test_step_options.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from fra_keras.models.normalization import FUSED_MIN_EPSILON, BatchNormalization, unbiased_to_biased

C = 6
MOMENTUM = 0.8


def numpy_batchnorm(x, dy, gamma, beta, epsilon):
    """(y, dx, dgamma, dbeta, biased mean, biased variance) of training-mode BatchNorm over all axes but
    the last, in float64; dx = gamma / s * (dy - mean(dy) - xhat * mean(dy * xhat)), s = sqrt(var + eps)."""
    x, dy = x.astype(np.float64).reshape(-1, C), dy.astype(np.float64).reshape(-1, C)
    mean, var = x.mean(0), x.var(0)
    s = np.sqrt(var + epsilon)
    xhat = (x - mean) / s
    y = xhat * gamma + beta
    dx = gamma / s * (dy - dy.mean(0) - xhat * (dy * xhat).mean(0))
    return y, dx, (dy * xhat).sum(0), dy.sum(0), mean, var


def _layer(shape, **kwargs):
    layer = BatchNormalization(momentum=MOMENTUM, epsilon=1e-5, **kwargs)
    layer.build(shape)
    rng = np.random.default_rng(3)
    layer.gamma.assign(rng.uniform(0.5, 2.0, C))
    layer.beta.assign(rng.normal(size=C))
    layer.moving_mean.assign(rng.normal(size=C))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, C))
    return layer


def _train_step(layer, x, dy):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return y, [np.asarray(g, np.float64) for g in grads]


@pytest.mark.parametrize("shape", [(12, C), (3, 5, C), (2, 4, 3, C)], ids=["rank2", "rank3", "rank4"])
def test_fused_training_pass_matches_numpy(shape):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 3.0 + 1.5).astype("float32")
    dy = rng.normal(size=shape).astype("float32")
    layer = _layer(shape)
    assert layer._fused_applies(tf.constant(x), True, None)
    old_mean, old_var = np.array(layer.moving_mean), np.array(layer.moving_variance)
    gamma, beta = np.array(layer.gamma, np.float64), np.array(layer.beta, np.float64)
    y, (dx, dgamma, dbeta) = _train_step(layer, x, dy)
    ref = numpy_batchnorm(x, dy, gamma, beta, FUSED_MIN_EPSILON)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, C), ref[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx.reshape(-1, C), ref[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dgamma, ref[2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dbeta, ref[3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.moving_mean, MOMENTUM * old_mean + (1 - MOMENTUM) * ref[4], rtol=1e-5, atol=1e-6)
    # Keras's biased variance, not the kernel's unbiased one (which differs by n / (n - 1) >= 1.02 here)
    np.testing.assert_allclose(layer.moving_variance, MOMENTUM * old_var + (1 - MOMENTUM) * ref[5], rtol=1e-5)


def test_fused_path_under_mixed_precision():
    shape = (4, 3, 3, C)
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype("float16")
    dy = rng.normal(size=shape).astype("float32")
    layer = _layer(shape, dtype="mixed_float16")
    y, (dx, dgamma, dbeta) = _train_step(layer, x, dy)
    assert y.dtype == tf.float16 and layer.moving_variance.dtype == "float32"
    ref = numpy_batchnorm(x.astype(np.float32), dy, np.array(layer.gamma), np.array(layer.beta), FUSED_MIN_EPSILON)
    np.testing.assert_allclose(np.asarray(y, np.float64).reshape(-1, C), ref[0], rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(dgamma, ref[2], rtol=1e-3, atol=1e-3)


def test_unbiased_to_biased_inverts_the_bessel_correction():
    x = np.random.default_rng(2).normal(size=(7, C))
    got = unbiased_to_biased(tf.constant(x.var(0, ddof=1), tf.float64), tf.constant(7))
    np.testing.assert_allclose(got, x.var(0), rtol=1e-12)
    # one value per channel: the kernel's variance is 0 and stays 0 (no division by n - 1 = 0)
    assert float(unbiased_to_biased(tf.constant([0.0]), tf.constant(1))[0]) == 0.0


def test_inference_and_unfused_paths_are_keras():
    """Inference is Keras's graph untouched (export depends on it); `fused=False` trains as Keras does."""
    shape = (5, 2, C)
    x = np.random.default_rng(4).normal(size=shape).astype("float32")
    ours = _layer(shape)
    assert not ours._fused_applies(tf.constant(x), False, None)
    assert not _layer(shape, fused=False)._fused_applies(tf.constant(x), True, None)
    keras_layer = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=1e-5)
    keras_layer.build(shape)
    keras_layer.set_weights(ours.get_weights())
    np.testing.assert_array_equal(ours(x, training=False), keras_layer(x, training=False))
    unfused = _layer(shape, fused=False)
    np.testing.assert_array_equal(unfused(x, training=True), keras_layer(x, training=True))
    np.testing.assert_array_equal(unfused.moving_variance, keras_layer.moving_variance)


def test_fused_and_unfused_training_agree():
    shape = (6, 4, 4, C)
    rng = np.random.default_rng(5)
    x, dy = rng.normal(size=shape).astype("float32"), rng.normal(size=shape).astype("float32")
    fused, unfused = _layer(shape), _layer(shape, fused=False)
    y_f, g_f = _train_step(fused, x, dy)
    y_u, g_u = _train_step(unfused, x, dy)
    np.testing.assert_allclose(y_f, y_u, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_f, g_u):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_variance, unfused.moving_variance, rtol=1e-6)


def test_syncbn_across_replicas_takes_the_unfused_path(mirrored_strategy):
    """SyncBN needs the all-reduced moments of Keras's path; a per-replica BN may fuse."""
    strategy = mirrored_strategy
    shape = (4, C)
    with strategy.scope():
        synced, local = _layer(shape, synchronized=True), _layer(shape, synchronized=False)
    x = tf.zeros(shape)
    decisions = strategy.run(lambda: tf.constant([synced._fused_applies(x, True, None),
                                                  local._fused_applies(x, True, None)]))
    for replica in strategy.experimental_local_results(decisions):
        assert list(np.asarray(replica)) == [False, True]
    # one device: SyncBN reduces over one replica, which the fused kernel computes
    assert _layer(shape, synchronized=True)._fused_applies(x, True, None)
