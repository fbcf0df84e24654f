"""One training step with MirroredStrategy on 2 x B images equals one device on the same 2B images.

The two logical CPU devices come from tests/conftest.py (`two_logical_cpus`: the tests fail, never skip,
without them). Both models start from the same weights (built separately, weights copied) and see the
same global batch; Keras splits it across replicas in order (replica 0 gets the first B). Compared after
the step: the logged loss and every metric, and every variable -- online and target networks,
predictors, prototypes, BatchNorm moving statistics and the optimiser's slots. Each mirrored variable
must also hold the same value on both replicas.

Notes:
* `decoder_dropout=0.0`: dropout draws would differ between the runs (different random streams).
* Variables are compared through their *updates* against a float32 floor measured in the same test: a
  third model takes the same step on one device with the batch in another order (`PERMUTATION`, which
  mixes the two replicas' halves). Summing the same numbers in another order is all that two replicas
  may change, so per variable
      ||delta_mirrored - delta_single|| <= FLOOR_FACTOR * ||delta_reordered - delta_single||
                                           + ROUNDING_ULPS * eps32 * ||variable||
  (the last term: the updated value is rounded to float32, so two runs whose updates differ by less
  than an ulp can still store values an ulp apart). Measured (docs/scaling.md, "2. Cross-replica
  mathematics"): the mirrored difference is at most 0.33 of that allowance (2.6x the floor). A missing
  cross-replica gradient term (each replica back-propagating only its own loss through the global
  mask-embedding mean or the mean-entropy average), a loss not divided by the number of replicas,
  per-replica BatchNorm statistics or a local mask-embedding mean exceed it 600-200,000 times and
  in 255-522 of the 535 variables.
* `test_cross_replica_gradients_are_global` checks the helpers' gradients against NumPy on a toy loss.
* The steps run eagerly (the cross-replica mathematics is the same as in a `tf.function`, and tracing
  the step for two replicas costs minutes on two shared cores); the compiled variant is marked slow.
  tests/test_multiworker.py trains compiled steps with collective all-reduces across two processes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import SMALL_MODEL, two_view_batch

from fra_keras import distributed, losses
from fra_keras.config import FRAConfig
from fra_keras.models import fra, neck
from fra_keras.models.fra import FRA, METRIC_NAMES

B = 4   # per replica; the global batch is 2B
TINY = dict(**SMALL_MODEL, batch_size=2 * B, steps_per_epoch=2, epochs=1, warmup_epochs=0,
            decoder_dropout=0.0, ema_momentum=0.5)
PERMUTATION = np.array([5, 2, 7, 0, 3, 6, 1, 4])   # the floor's batch order: mixes both halves
FLOOR_FACTOR = 8.0
ROUNDING_ULPS = 2.0
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def strategy(mirrored_strategy):
    """The session's MirroredStrategy over the two logical CPUs (tests/conftest.py)."""
    return mirrored_strategy


def _batch(seed=0, geometry=False):
    """The global batch (2B images; `geometry`: with crop geometries, so that the two replicas' halves
    overlap on different numbers of cells)."""
    return two_view_batch(2 * B, seed, geometry)


def _variables(model):
    """Every model variable, then the optimiser's, in a fixed order (paths are not unique: the online
    and target backbones share layer names)."""
    return list(model.weights) + list(model.optimizer.variables)


def _snapshot(model):
    return [np.array(v) for v in _variables(model)]


def _groups(model):
    """Indices into `_variables(model)` by role, to check that each group actually moved."""
    index = {id(v): i for i, v in enumerate(_variables(model))}

    def ids(variables):
        return [index[id(v)] for v in variables]

    return {
        "online": ids(model.online_variables),
        "target": ids(model.target_variables),
        "predictors": ids(model.predictor.trainable_variables + model.region_predictor.trainable_variables),
        "prototypes": ids([model.prototypes, model.target_prototypes]),
        "bn_statistics": ids([v for v in model.weights if "moving_" in v.path]),
        "optimizer_slots": ids([v for v in model.optimizer.variables if "momentum" in v.path]),
    }


def _run_models(strategy, run_eagerly, **overrides):
    """One step of three models from the same weights: one device on the batch, one device on the
    batch in `PERMUTATION` order (the float32 floor), and the two-replica strategy on the batch.
    `overrides`: FRAConfig fields on top of TINY (only the fault tests use them)."""
    config = FRAConfig.from_preset("tiny", **{**TINY, **overrides})
    assert config.sync_batchnorm or "sync_batchnorm" in overrides
    keras.utils.set_random_seed(1)
    single = FRA(config)
    single.compile(run_eagerly=run_eagerly)
    reordered = FRA(config)
    reordered.compile(run_eagerly=run_eagerly)
    with strategy.scope():
        mirrored = FRA(config)
        mirrored.compile(run_eagerly=run_eagerly)
    weights = single.get_weights()
    reordered.set_weights(weights)                             # identical starting points
    mirrored.set_weights(weights)
    before = _snapshot(single)
    n = len(single.weights)
    for other in (reordered, mirrored):
        assert all(np.array_equal(a, b) for a, b in zip(before[:n], _snapshot(other)[:n]))

    batch = _batch(geometry=config.cluster_targets == "cross_view")
    logs_single = single.train_on_batch(batch, return_dict=True)
    reordered.train_on_batch({k: v[PERMUTATION] for k, v in batch.items()})
    history = mirrored.fit(tf.data.Dataset.from_tensors(batch), epochs=1, steps_per_epoch=1, verbose=0)
    logs_mirrored = {k: v[-1] for k, v in history.history.items()}
    return dict(single=single, reordered=reordered, mirrored=mirrored, strategy=strategy, before=before,
                logs=(logs_single, logs_mirrored))


@pytest.fixture(scope="module")
def models(strategy):
    return _run_models(strategy, run_eagerly=True)


def _check_metrics(logs_single, logs_mirrored):
    assert set(logs_single) == set(METRIC_NAMES) == set(logs_mirrored)
    for name in METRIC_NAMES:
        assert logs_mirrored[name] == pytest.approx(logs_single[name], rel=1e-4, abs=1e-6), name


def update_differences(before, after_single, after_reordered, after_mirrored):
    """Per variable: (||d_m - d_s||, ||d_r - d_s||, rounding bound, ||d_s||) in float64, where d_x is
    the update of run x (after - before)."""
    rows = []
    for start, a_s, a_r, a_m in zip(before, after_single, after_reordered, after_mirrored):
        start = start.astype(np.float64)
        d_s, d_r, d_m = (a.astype(np.float64) - start for a in (a_s, a_r, a_m))
        rounding = ROUNDING_ULPS * EPS32 * max(np.linalg.norm(start), np.linalg.norm(a_s.astype(np.float64)))
        rows.append((np.linalg.norm(d_m - d_s), np.linalg.norm(d_r - d_s), rounding, np.linalg.norm(d_s)))
    return rows


def _summary(rows):
    """One line: the worst difference against its allowance, and relative to the update (updates
    above 1e-6 only: the attention key biases move by ~1e-11, their gradient is zero up to rounding)."""
    ratios = [m / (FLOOR_FACTOR * r + rounding) if m else 0.0 for m, r, rounding, _ in rows]
    moving = [(m, r, d) for m, r, _, d in rows if d > 1e-6]
    relative = max(m / d for m, _, d in moving)
    floor = max(r / d for _, r, d in moving)
    return (f"\n{sum(x > 1 for x in ratios)} of {len(rows)} variables beyond the allowance; worst "
            f"|d_mirrored - d_single| / allowance {max(ratios):.3g}; worst relative difference {relative:.3g} "
            f"(reordering {floor:.3g}) among updates > 1e-6")


def _check_updates(result):
    single, before = result["single"], result["before"]
    after = {name: _snapshot(result[name]) for name in ("single", "reordered", "mirrored")}
    paths = [v.path for v in _variables(single)]
    assert [v.shape for v in _variables(result["mirrored"])] == [v.shape for v in _variables(single)]
    assert len(after["single"]) == len(after["mirrored"]) == len(after["reordered"]) == len(before)
    rows = update_differences(before, after["single"], after["reordered"], after["mirrored"])
    print(_summary(rows))                                    # shown with pytest -s (docs/scaling.md)
    bad = [f"{path}: |d_mirrored - d_single| {m:.3g} > {FLOOR_FACTOR:g} x floor {r:.3g} + rounding "
           f"{rounding:.3g} (|d_single| {d:.3g})"
           for path, (m, r, rounding, d) in zip(paths, rows) if m > FLOOR_FACTOR * r + rounding]
    assert not bad, f"{len(bad)} of {len(rows)} updates differ beyond the reordering floor:\n" + "\n".join(bad)
    for group, indices in _groups(single).items():     # the comparison is not vacuous
        assert indices, group
        moved = sum(rows[i][3] for i in indices)
        assert moved > 1e-6, f"{group} did not change in the step"
        # ... and not swamped by the allowance: each group moves far more than its floor + rounding
        allowed = sum(FLOOR_FACTOR * rows[i][1] + rows[i][2] for i in indices)
        assert moved > 20 * allowed, f"{group}: update {moved:.3g} vs allowance {allowed:.3g}"


def _check_replicas_agree(result):
    strategy, mirrored = result["strategy"], result["mirrored"]
    differ = []
    for v in list(mirrored.weights) + list(mirrored.optimizer.variables):
        copies = [np.asarray(c) for c in strategy.experimental_local_results(v.value)]
        assert len(copies) == 2, v.path
        if not np.array_equal(copies[0], copies[1]):
            differ.append(f"{v.path}: {np.max(np.abs(copies[0] - copies[1])):.3g}")
    assert not differ, "per-replica copies differ:\n" + "\n".join(differ)


def test_metrics_match_single_device(models):
    _check_metrics(*models["logs"])


def test_updated_weights_match_single_device(models):
    """Online, target, predictors, prototypes, BN moving statistics and LARS momenta, each within a
    small multiple of the reordering floor."""
    _check_updates(models)


def test_cross_view_targets_step_matches_single_device(strategy):
    """Opt-in cross-view clustering targets: the overlap-weighted mean of the cross-entropy is taken
    over the global batch (a per-replica mean would weight the replicas' cells differently)."""
    result = _run_models(strategy, run_eagerly=True, cluster_targets="cross_view")
    _check_metrics(*result["logs"])
    _check_updates(result)


def test_replicas_hold_identical_copies(models):
    """Prototypes, the target EMA and the SyncBN moving statistics are assigned in replica context
    (aggregation "none"): every replica must compute the same value."""
    _check_replicas_agree(models)


def test_global_batch_is_split_in_order(strategy):
    """Replica 0 gets the first B images: what the equivalence above relies on."""
    batch = tf.data.Dataset.from_tensors({"x": np.arange(2 * B, dtype="float32")})
    first = next(iter(strategy.experimental_distribute_dataset(batch)))
    parts = [np.asarray(t) for t in strategy.experimental_local_results(first["x"])]
    assert [p.tolist() for p in parts] == [list(range(B)), list(range(B, 2 * B))]
    assert distributed.num_replicas() == 1                     # outside the strategy
    with strategy.scope():
        assert strategy.num_replicas_in_sync == 2


def test_cross_replica_helpers_reduce_over_replicas(strategy):
    def fn():
        ctx = tf.distribute.get_replica_context()
        x = tf.cast(ctx.replica_id_in_sync_group, tf.float32) + 1.0    # 1 on replica 0, 2 on replica 1
        return distributed.cross_replica_sum(x), distributed.cross_replica_mean(x), distributed.num_replicas()

    sums, means, counts = strategy.run(fn)
    assert [float(v) for v in strategy.experimental_local_results(sums)] == [3.0, 3.0]
    assert [float(v) for v in strategy.experimental_local_results(means)] == [1.5, 1.5]
    assert counts == 2
    assert float(distributed.cross_replica_sum(tf.constant(2.0))) == 2.0   # identity outside


def _own_loss_only(op):
    """A cross-replica SUM / MEAN whose gradient reaches each replica from its own loss only: the
    missing-gradient fault (what the PyTorch reference's in-place all-reduce does) that the tests
    below must catch. Forward value: the true all-reduce."""
    def reduce(x):
        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return x
        share = 1.0 / ctx.num_replicas_in_sync if op == "MEAN" else 1.0
        return ctx.all_reduce(op, tf.stop_gradient(x)) + share * (x - tf.stop_gradient(x))
    return reduce


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("op", ["SUM", "MEAN"])
def test_cross_replica_gradients_are_global(strategy, op, compiled):
    """Every replica receives the gradient of the GLOBAL loss through a cross-replica sum / mean.

    Toy: replica r holds x_r (3,), g = sum_s x_s (or the mean), its loss is
    L_r = sum(sin(g) * x_r) + 0.5 * |x_r|^2, scaled by 1/R as in `FRA.train_step`. The global loss is
    L = (1/R) sum_r L_r, so dL/dx_r = (1/R) [cos(g) * c * sum_s x_s + sin(g) + x_r] with c = 1 (sum) or
    1/R (mean). A replica that back-propagated only its own loss would get cos(g) * c * x_r instead;
    `_own_loss_only` must give exactly that (it is the fault injected further down).
    """
    xs = np.array([[0.3, -1.2, 2.0], [1.5, 0.4, -0.7]])
    replicas = len(xs)

    def gradients(reduce):
        def fn():
            ctx = tf.distribute.get_replica_context()
            x = tf.gather(tf.constant(xs, tf.float32), ctx.replica_id_in_sync_group)
            with tf.GradientTape() as tape:
                tape.watch(x)
                g = reduce(x)
                loss = tf.reduce_sum(tf.sin(g) * x) + 0.5 * tf.reduce_sum(tf.square(x))
                scaled = loss / distributed.num_replicas()
            return tape.gradient(scaled, x)

        grads = strategy.run(tf.function(fn) if compiled else fn)
        return np.stack([np.asarray(t) for t in strategy.experimental_local_results(grads)])

    c = 1.0 if op == "SUM" else 1.0 / replicas
    g = c * xs.sum(axis=0)
    expected = (np.cos(g) * c * xs.sum(axis=0) + np.sin(g) + xs) / replicas
    own_loss_only = (np.cos(g) * c * xs + np.sin(g) + xs) / replicas
    assert np.abs(expected - own_loss_only).min() > 0.02      # the toy tells the two apart
    helper = distributed.cross_replica_sum if op == "SUM" else distributed.cross_replica_mean
    np.testing.assert_allclose(gradients(helper), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gradients(_own_loss_only(op)), own_loss_only, rtol=1e-5, atol=1e-6)


class _Patched:
    """`fra_keras.distributed` with some functions replaced, for one module's view of it."""

    def __init__(self, **replacements):
        self.__dict__.update(replacements)

    def __getattr__(self, name):
        return getattr(distributed, name)


FAULTS = {
    # name: (where to patch -> {attribute: replacement}, config overrides, forward pass unchanged?)
    "own-loss-gradient-everywhere": (lambda: {distributed: dict(cross_replica_sum=_own_loss_only("SUM"),
                                                                 cross_replica_mean=_own_loss_only("MEAN"))},
                                     {}, True),
    "own-loss-gradient-mask-mean": (lambda: {neck: dict(distributed=_Patched(
        cross_replica_mean=_own_loss_only("MEAN")))}, {}, True),
    "own-loss-gradient-mean-entropy": (lambda: {losses: dict(distributed=_Patched(
        cross_replica_mean=_own_loss_only("MEAN")))}, {}, True),
    "local-mask-mean": (lambda: {neck: dict(distributed=_Patched(cross_replica_mean=lambda x: x))}, {}, False),
    "local-mean-entropy": (lambda: {losses: dict(distributed=_Patched(cross_replica_mean=lambda x: x))},
                           {}, False),
    "loss-not-divided-by-replicas": (lambda: {fra: dict(distributed=_Patched(num_replicas=lambda: 1))},
                                     {}, True),
    "per-replica-batchnorm": (lambda: {}, dict(sync_batchnorm=False), False),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_update_check_catches_each_fault(strategy, monkeypatch, fault):
    """Each fault in the cross-replica mathematics fails the update check (measured: 255-522 of the
    535 variables beyond their allowance, the worst by 610-2e5 times; docs/scaling.md). The own-loss
    gradients and the unscaled loss leave the forward pass, hence the logged metrics, unchanged."""
    patches, overrides, same_forward = FAULTS[fault]
    for module, replacements in patches().items():
        for name, value in replacements.items():
            monkeypatch.setattr(module, name, value)
    result = _run_models(strategy, run_eagerly=True, **overrides)
    if same_forward:
        _check_metrics(*result["logs"])
    with pytest.raises(AssertionError, match="beyond the reordering floor"):
        _check_updates(result)


def test_missing_devices_fail_not_skip():
    """With TensorFlow initialised before tests/conftest.py (so the CPU cannot be split), a
    distribution test fails with the reason instead of skipping."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import tensorflow as tf, pytest, sys; tf.config.list_logical_devices(); "
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-rf', "
            "'tests/test_distributed.py::test_global_batch_is_split_in_order']))")
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3"))
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-3000:]
    assert "1 error" in out or "1 failed" in out, out[-3000:]
    assert "skipped" not in out, out[-3000:]
    assert "need two logical CPU devices" in out and "cannot be modified" in out, out[-3000:]


@pytest.mark.slow
def test_compiled_step_matches_single_device(strategy):
    """The same equivalence with the step traced into a tf.function (minutes on 2 CPU cores)."""
    result = _run_models(strategy, run_eagerly=False)
    _check_metrics(*result["logs"])
    _check_updates(result)
    _check_replicas_agree(result)
