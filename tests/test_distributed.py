"""One training step with MirroredStrategy on 2 x B images equals one device on the same 2B images.

The two logical CPU devices come from tests/conftest.py. Both models start from the same weights (built
separately, weights copied) and see the same global batch; Keras splits it across replicas in order
(replica 0 gets the first B). Compared after the step: the logged loss and every metric, and every
variable -- online and target networks, predictors, prototypes, BatchNorm moving statistics and the
optimiser's slots. Each mirrored variable must also hold the same value on both replicas.

Notes:
* `decoder_dropout=0.0`: dropout draws would differ between the runs (different random streams).
* Variables are compared through their *updates*: ||delta_mirrored - delta_single|| <= RTOL ||delta_single||
  per variable. The float32 noise floor is about 0.5 % on a few BatchNorm betas (the same spread
  appears when one device sees the batch in another order), so RTOL = 3 %. Real faults are O(1): a loss
  not divided by the number of replicas doubles every gradient, per-replica BatchNorm statistics or a
  local (not all-reduced) mask-embedding mean change the updates and the moving statistics outright.
* The steps run eagerly (the cross-replica mathematics is the same as in a `tf.function`, and tracing
  the step for two replicas costs minutes on two shared cores); the compiled variant is marked slow.
  tests/test_multiworker.py trains compiled steps with collective all-reduces across two processes.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from fra_keras import distributed
from fra_keras.config import FRAConfig
from fra_keras.models.fra import FRA, METRIC_NAMES

B = 4   # per replica; the global batch is 2B
TINY = dict(image_size=64, backbone_width=8, hidden_dim=32, proj_dim=16, decoder_dim=16, decoder_ffn_dim=16,
            decoder_heads=2, batch_size=2 * B, steps_per_epoch=2, epochs=1, warmup_epochs=0,
            decoder_dropout=0.0, ema_momentum=0.5)
RTOL = 3e-2
ATOL = 1e-7     # on the norm of a variable's update (attention key biases get ~1e-10 updates)


_STRATEGY = []


def _strategy():
    """One MirroredStrategy over the two logical CPUs for the whole module: a second strategy on the
    same devices would reuse collective instance keys and clash with the first one's all-reduces."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip("needs the two logical CPU devices configured by tests/conftest.py")
    if not _STRATEGY:
        _STRATEGY.append(tf.distribute.MirroredStrategy(devices[:2]))
    return _STRATEGY[0]


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=(2 * B, 64, 64, 3)).astype("float32") for k in ("view1", "view2")}


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


def _run_pair(run_eagerly):
    strategy = _strategy()
    config = FRAConfig.from_preset("tiny", **TINY)
    assert config.sync_batchnorm
    keras.utils.set_random_seed(1)
    single = FRA(config)
    single.compile(run_eagerly=run_eagerly)
    with strategy.scope():
        mirrored = FRA(config)
        mirrored.compile(run_eagerly=run_eagerly)
    mirrored.set_weights(single.get_weights())                 # identical starting point
    before = _snapshot(single)
    n = len(single.weights)
    assert all(np.array_equal(a, b) for a, b in zip(before[:n], _snapshot(mirrored)[:n]))

    batch = _batch()
    logs_single = single.train_on_batch(batch, return_dict=True)
    history = mirrored.fit(tf.data.Dataset.from_tensors(batch), epochs=1, steps_per_epoch=1, verbose=0)
    logs_mirrored = {k: v[-1] for k, v in history.history.items()}
    return dict(single=single, mirrored=mirrored, strategy=strategy, before=before,
                logs=(logs_single, logs_mirrored))


@pytest.fixture(scope="module")
def pair():
    return _run_pair(run_eagerly=True)


def _check_metrics(logs_single, logs_mirrored):
    assert set(logs_single) == set(METRIC_NAMES) == set(logs_mirrored)
    for name in METRIC_NAMES:
        assert logs_mirrored[name] == pytest.approx(logs_single[name], rel=1e-4, abs=1e-6), name


def _check_updates(result):
    single, mirrored, before = result["single"], result["mirrored"], result["before"]
    after_single, after_mirrored = _snapshot(single), _snapshot(mirrored)
    paths = [v.path for v in _variables(single)]
    assert [v.shape for v in _variables(mirrored)] == [v.shape for v in _variables(single)]
    assert len(after_single) == len(after_mirrored) == len(before)
    bad = []
    for path, start, a_single, a_mirrored in zip(paths, before, after_single, after_mirrored):
        d_single = a_single.astype(np.float64) - start
        d_mirrored = a_mirrored.astype(np.float64) - start
        error = np.linalg.norm(d_mirrored - d_single)
        if error > RTOL * np.linalg.norm(d_single) + ATOL:
            bad.append(f"{path}: |diff| {error:.3g} vs |update| {np.linalg.norm(d_single):.3g}")
    assert not bad, "updates differ:\n" + "\n".join(bad)
    for group, indices in _groups(single).items():     # the comparison is not vacuous
        assert indices, group
        moved = sum(np.linalg.norm(after_single[i].astype(np.float64) - before[i]) for i in indices)
        assert moved > 1e-6, f"{group} did not change in the step"


def _check_replicas_agree(result):
    strategy, mirrored = result["strategy"], result["mirrored"]
    differ = []
    for v in list(mirrored.weights) + list(mirrored.optimizer.variables):
        copies = [np.asarray(c) for c in strategy.experimental_local_results(v.value)]
        assert len(copies) == 2, v.path
        if not np.array_equal(copies[0], copies[1]):
            differ.append(f"{v.path}: {np.max(np.abs(copies[0] - copies[1])):.3g}")
    assert not differ, "per-replica copies differ:\n" + "\n".join(differ)


def test_metrics_match_single_device(pair):
    _check_metrics(*pair["logs"])


def test_updated_weights_match_single_device(pair):
    """Online, target, predictors, prototypes, BN moving statistics and LARS momenta."""
    _check_updates(pair)


def test_replicas_hold_identical_copies(pair):
    """Prototypes, the target EMA and the SyncBN moving statistics are assigned in replica context
    (aggregation "none"): every replica must compute the same value."""
    _check_replicas_agree(pair)


def test_global_batch_is_split_in_order(pair):
    """Replica 0 gets the first B images: what the equivalence above relies on."""
    strategy = pair["strategy"]
    batch = tf.data.Dataset.from_tensors({"x": np.arange(2 * B, dtype="float32")})
    first = next(iter(strategy.experimental_distribute_dataset(batch)))
    parts = [np.asarray(t) for t in strategy.experimental_local_results(first["x"])]
    assert [p.tolist() for p in parts] == [list(range(B)), list(range(B, 2 * B))]
    assert distributed.num_replicas() == 1                     # outside the strategy
    with strategy.scope():
        assert strategy.num_replicas_in_sync == 2


def test_cross_replica_helpers_reduce_over_replicas(pair):
    strategy = pair["strategy"]

    def fn():
        ctx = tf.distribute.get_replica_context()
        x = tf.cast(ctx.replica_id_in_sync_group, tf.float32) + 1.0    # 1 on replica 0, 2 on replica 1
        return distributed.cross_replica_sum(x), distributed.cross_replica_mean(x), distributed.num_replicas()

    sums, means, counts = strategy.run(fn)
    assert [float(v) for v in strategy.experimental_local_results(sums)] == [3.0, 3.0]
    assert [float(v) for v in strategy.experimental_local_results(means)] == [1.5, 1.5]
    assert counts == 2
    assert float(distributed.cross_replica_sum(tf.constant(2.0))) == 2.0   # identity outside


@pytest.mark.slow
def test_compiled_step_matches_single_device():
    """The same equivalence with the step traced into a tf.function (minutes on 2 CPU cores)."""
    result = _run_pair(run_eagerly=False)
    _check_metrics(*result["logs"])
    _check_updates(result)
    _check_replicas_agree(result)
