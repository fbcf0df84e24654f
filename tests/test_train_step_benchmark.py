"""benchmarks/train_step.py: the step variants it times (docs/scaling.md, section 5) and its statistics."""

from __future__ import annotations


import numpy as np
import pytest
from harness import load_benchmark

SMALL = ["--preset", "tiny", "--image-size", "32", "--batch-size", "4", "--backbone-width", "8",
         "--hidden-dim", "16", "--proj-dim", "8", "--decoder-dim", "8", "--decoder-ffn-dim", "8",
         "--decoder-heads", "2", "--decoder-layers", "1", "--decoder-dropout", "0.0", "--num-regions", "3"]


def _bench():
    return load_benchmark("train_step")


def test_spread_matches_numpy():
    bench = _bench()
    values = list(np.random.default_rng(0).gamma(2.0, size=31))
    med, p90, top = bench.spread(values)
    np.testing.assert_allclose([med, p90, top], [np.median(values), np.percentile(values, 90), np.max(values)])


@pytest.mark.slow   # three traces of a (small) FRA step: about 25 s on 2 busy cores
def test_no_optimizer_steps_leave_the_weights_and_give_the_train_step_loss():
    """Without the optimiser, the timed FRA step is FRA.train_step's forward + backward: from the same
    weights it reports the same loss, and neither it nor the floor's step changes any variable but the
    BatchNorm moving statistics (training-mode forward passes update them, as in the real step)."""
    import tensorflow as tf

    bench = _bench()
    _, config = bench.parse_args(SMALL)
    views = bench.random_views(config)
    model, step = bench.fra_step_fn(config, jit=False, update=False)
    kept = [v for v in model.variables if "moving_" not in v.path]   # weights, prototypes, EMA target
    before = [v.numpy().copy() for v in kept]
    loss, sums = step(views)
    loss = float(loss)
    assert sums.shape == (len(model.optimized_variables),) and np.count_nonzero(sums.numpy()) > sums.shape[0] // 2
    for v, old in zip(kept, before):
        np.testing.assert_array_equal(v.numpy(), old, err_msg=v.path)
    assert float(tf.function(model.train_step)(views)["loss"]) == pytest.approx(loss, rel=1e-5)
    # The check can fail: the real step does move the weights.
    assert any(not np.array_equal(v.numpy(), old) for v, old in zip(kept, before))

    online, floor = bench.floor_step_fn(config, jit=False, update=False)
    weights = [v.numpy().copy() for v in online.trainable_variables]
    assert np.isfinite(float(floor(views)[0]))
    for v, old in zip(online.trainable_variables, weights):
        np.testing.assert_array_equal(v.numpy(), old, err_msg=v.path)


def test_no_optimizer_floor_returns_the_weight_gradients():
    """The timed step must compute what it claims: its outputs carry one sum per weight gradient (and
    per target output), equal to the sums of gradients taken eagerly with a plain GradientTape. (Left
    as control dependencies only, Grappler pruned the weight gradients of the compiled step.)"""
    import tensorflow as tf

    bench = _bench()
    _, config = bench.parse_args(SMALL)
    views = bench.random_views(config)
    online, floor = bench.floor_step_fn(config, jit=False, update=False)
    loss, sums = floor(views)
    with tf.GradientTape() as tape:
        want_loss = sum(tf.reduce_mean(online(views[k], training=True)) for k in ("view1", "view2"))
    grads = tape.gradient(want_loss, online.trainable_variables)
    n = len(online.trainable_variables)
    assert sums.shape == (n + 2,)                    # + the two target forward passes
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5)
    # A gradient's sum can cancel to near zero, so each is compared on the scale of its absolute sum
    # (the compiled step and the eager one round differently).
    want = np.array([float(tf.reduce_sum(g)) for g in grads])
    scale = np.array([float(tf.reduce_sum(tf.abs(g))) for g in grads])
    assert np.all(np.abs(sums.numpy()[:n] - want) <= 1e-3 * scale + 1e-7), np.max(
        np.abs(sums.numpy()[:n] - want) / (scale + 1e-30))
    assert np.count_nonzero(sums.numpy()[:n]) > n // 2


def test_unfused_comparison_changes_only_the_batchnorm_kernel():
    """--compare-unfused-batchnorm times models whose every BatchNorm takes Keras's ops, from a config
    equal to the timed one in every other field."""
    import dataclasses

    from harness import tiny_config

    from fra_keras.models.normalization import BatchNormalization

    bench = _bench()
    config = tiny_config()
    unfused = bench.unfused_batchnorm(config)
    differ = [f.name for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(unfused, f.name)]
    assert differ == ["fused_batchnorm"] and config.fused_batchnorm and not unfused.fused_batchnorm
    for cfg, fused in ((config, True), (unfused, False)):
        online, _ = bench.floor_step_fn(cfg, jit=False, update=False)
        norms = [layer for layer in online.layers if isinstance(layer, BatchNormalization)]
        assert norms and all(layer.fused is fused for layer in norms)


def test_profile_ops_counts_the_ops_a_function_runs():
    """`profile_ops` reads the profiler's trace: a function of exactly three matrix products and one
    addition shows three matmul ops and one AddV2 per call, whatever kernel (oneDNN or Eigen) runs them."""
    import tensorflow as tf

    bench = _bench()
    x = tf.random.normal([64, 64])

    @tf.function
    def three_matmuls(v):
        return tf.matmul(tf.matmul(tf.matmul(v, v), v), v) + 1.0

    three_matmuls(x)
    profile = bench.profile_ops(three_matmuls, x, steps=2)
    matmuls = {k: v for k, v in profile.items() if k.endswith("MatMul")}
    assert sum(n for _, n in matmuls.values()) == 3 and profile["AddV2"][1] == 1
    assert all(ms > 0 for ms, _ in profile.values())
