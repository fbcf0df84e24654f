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
    loss = float(step(views))
    for v, old in zip(kept, before):
        np.testing.assert_array_equal(v.numpy(), old, err_msg=v.path)
    assert float(tf.function(model.train_step)(views)["loss"]) == pytest.approx(loss, rel=1e-5)
    # The check can fail: the real step does move the weights.
    assert any(not np.array_equal(v.numpy(), old) for v, old in zip(kept, before))

    online, floor = bench.floor_step_fn(config, jit=False, update=False)
    weights = [v.numpy().copy() for v in online.trainable_variables]
    assert np.isfinite(float(floor(views)))
    for v, old in zip(online.trainable_variables, weights):
        np.testing.assert_array_equal(v.numpy(), old, err_msg=v.path)
