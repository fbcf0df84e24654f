"""Options that change how a step is computed, not what it computes, give the default step:

* opt-in `backward_per_view`: each online view's forward and backward pass in turn gives the step of
  the default single tape -- the loss is a sum of one term per online view (FRA._view_loss), so only the
  order in which the two views' gradients are summed differs;
* `fused_batchnorm=False` (Keras's BatchNorm ops) gives the default fused-kernel step
  (models/normalization.py; the layer itself is checked against NumPy in tests/test_normalization.py).

Both models are built from the same seed (same weights and the same dropout streams: the layers are
called in the same order) and take one step on the same batch. Compared: every logged metric, and every
variable's update (online, target, predictors, prototypes, BN statistics, LARS momenta) within
`RELATIVE` of the default step's update plus two float32 ulps of the variable (the stored value is
rounded) plus `ABSOLUTE` (rounding noise of the attention key biases, whose gradient is zero). Dropping one view's clustering term, or one view's gradients, fails this by orders of
magnitude (the smallest effect, the clustering weight 0.1 on the decoder, moves those variables by
over 10 % of their update).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from harness import tiny_config, two_view_batch

from fra_keras.models.fra import FRA, METRIC_NAMES

B = 8
# EMA momentum 0.5 so that the target's update is large enough to compare.
OVERRIDES = dict(batch_size=B, ema_momentum=0.5)
RELATIVE = 1e-4
# The attention key biases' gradient is zero in exact arithmetic (a softmax does not change when the
# same constant is added to all its scores), so they move by ~1e-11 of rounding noise either way.
ABSOLUTE = 1e-9
EPS32 = float(np.finfo(np.float32).eps)


def _one_step(run_eagerly, **fields):
    """(variables before, after, logs) of one step of a model built from seed 1."""
    config = tiny_config(**{**OVERRIDES, **fields})
    keras.utils.set_random_seed(1)
    model = FRA(config)
    model.compile(run_eagerly=run_eagerly)
    variables = list(model.weights) + list(model.optimizer.variables)
    before = [np.array(v) for v in variables]
    logs = model.train_on_batch(two_view_batch(B, geometry=config.cluster_targets == "cross_view"), return_dict=True)
    return before, [np.array(v) for v in variables], logs, [v.path for v in variables]


@pytest.mark.parametrize("option, fields, run_eagerly", [
    (dict(backward_per_view=True), dict(), True),
    (dict(backward_per_view=True), dict(cluster_targets="cross_view"), True),
    # plain BYOL, compiled: the graph path with its control dependencies
    (dict(backward_per_view=True), dict(region_losses=False), False),
    (dict(fused_batchnorm=False), dict(), True),
], ids=["per-view-fra", "per-view-cross-view", "per-view-byol-compiled", "unfused-bn-fra"])
def test_option_takes_the_default_step(option, fields, run_eagerly):
    before, default, logs_default, paths = _one_step(run_eagerly, **fields)
    before_other, other, logs_other, _ = _one_step(run_eagerly, **option, **fields)
    assert all(np.array_equal(a, b) for a, b in zip(before, before_other))      # the same starting point
    assert set(logs_other) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert logs_other[name] == pytest.approx(logs_default[name], rel=1e-5, abs=1e-7), name
    bad, moved = [], 0
    for path, start, a_def, a_other in zip(paths, before, default, other):
        start, a_def, a_other = (x.astype(np.float64) for x in (start, a_def, a_other))
        d_def, d_other = a_def - start, a_other - start
        allowed = ABSOLUTE + RELATIVE * np.linalg.norm(d_def) + 2 * EPS32 * max(np.linalg.norm(start), np.linalg.norm(a_def))
        moved += np.linalg.norm(d_def) > 1e-6
        if np.linalg.norm(d_other - d_def) > allowed:
            bad.append(f"{path}: |d_option - d_default| {np.linalg.norm(d_other - d_def):.3g} > {allowed:.3g} "
                       f"(|d_default| {np.linalg.norm(d_def):.3g})")
    assert moved > len(paths) // 2          # the comparison is not vacuous
    assert not bad, f"{len(bad)} of {len(paths)} updates differ:\n" + "\n".join(bad)
