"""Tests for `fra_keras.models.fra.FRA`: construction, one training step checked against NumPy,
EMA / prototype updates, metrics, plain BYOL, `.keras` round trip, inference helpers and `fit`.

One model is built and stepped once per module (compiling the train step is the slow part). The
decoder dropout is set to 0 so that a training-mode forward pass is deterministic: the test can then
recompute, with the pre-step weights, exactly what the training step saw.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import tiny_config, tiny_model, tiny_overrides

from fra_keras.config import ConfigError, FRAConfig
from fra_keras.models.backbone import build_backbone, load_backbone
from fra_keras.models.fra import FRA, METRIC_NAMES

SCHEDULE = dict(steps_per_epoch=5, epochs=2, warmup_epochs=1)
# Deterministic training forward (no dropout); a large enough step and a low EMA momentum so that the
# EMA check below is not satisfied trivially by "nothing moved".
STEP = dict(decoder_dropout=0.0, learning_rate=1.0, lars_eta=0.1, ema_momentum=0.5,
            decoder_query_content=False, sinkhorn_epsilon=0.0)   # the reference recipe (docs/method.md, "Losses")
B, K = 4, 8
LAM, W_CLU, W_DEC = 0.5, 0.1, 0.02
T_S, T_T = 0.1, 0.04
EXPECTED_METRICS = {"loss", "loss_global", "loss_region", "loss_cluster", "z_std", "region_entropy",
                    "mask_cosine", "ema_momentum", "lr"}

# ---------------------------------------------------------------------------------------------------
# NumPy references (docs/method.md, "Formulas (the reference recipe)")
# ---------------------------------------------------------------------------------------------------


def _n(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def np_global(pred, target):
    return 2 - 2 * np.mean(np.sum(_n(pred) * _n(target), -1))


def np_region(pred, target, w=W_DEC):
    p, t = _n(pred), _n(target)
    b, k, _ = p.shape
    pos = 2 - 2 / (b * k) * np.sum(p * t)
    neg = 0.0
    for i in range(b):
        c = p[i] @ t[i].T
        np.fill_diagonal(c, 0.0)
        neg += np.sum(c ** 2) / k
    return pos + w * neg / (b * k)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_sinkhorn(p, iters=3):
    q = p.T.copy()                      # (K, N)
    k, n = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(1, keepdims=True)
        q /= k
        q /= q.sum(0, keepdims=True)
        q /= n
    return (q * n).T


def np_cluster(student, teacher):
    s = np.asarray(student, np.float64)
    t = np.asarray(teacher, np.float64)
    q = np_sinkhorn(_softmax(t / T_T))
    logp = np.log(_softmax(s / T_S))
    ce = np.mean(np.sum(-q * logp, -1))
    pbar = _softmax(s / T_S).mean(0)
    return ce + np.sum(pbar * np.log(pbar)) + math.log(s.shape[-1])


def np_ema(step, total, base):
    return 1 - (1 - base) * (math.cos(math.pi * step / total) + 1) / 2


def np_schedule(step, base, spe, epochs, warmup):
    if step < warmup * spe:
        return base * (step + 1) / (warmup * spe)
    e = step // spe
    return base * 0.5 * (1 + math.cos(math.pi * (e - warmup) / (epochs - warmup)))


def _values(variables):
    return [np.array(v.numpy(), dtype=np.float64) for v in variables]


def _np_outputs(outs):
    return {k: np.array(v.numpy(), dtype=np.float64) for k, v in outs.items()}


def _views(seed):
    rng = np.random.default_rng(seed)
    return {"view1": rng.normal(size=(B, 64, 64, 3)).astype("float32"),
            "view2": rng.normal(size=(B, 64, 64, 3)).astype("float32")}


# ---------------------------------------------------------------------------------------------------
# Module fixture: build, record, step twice
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run():
    # Seeded: the "most variables moved" counts below depend on the initial weights, which must not
    # depend on which tests ran before in the process.
    model = tiny_model(0, **SCHEDULE, **STEP)
    config = model.config
    model.compile()
    r = {"model": model, "config": config}
    r["online0"] = _values(model.online_variables)
    r["target0"] = _values(model.target_variables)
    r["pred0"] = _values(model.predictor.trainable_variables + model.region_predictor.trainable_variables)
    r["proto0"] = model.prototypes.numpy().astype(np.float64)
    r["tproto0"] = model.target_prototypes.numpy().astype(np.float64)
    batch = _views(0)
    r["batch"] = batch
    # What the training step will compute, with the pre-step weights (training mode, deterministic).
    views = (batch["view1"], batch["view2"])
    r["on"] = [_np_outputs(model._run_network(model.backbone, model.neck, v, True)) for v in views]
    r["tg"] = [_np_outputs(model._run_network(model.target_backbone, model.target_neck, v, True)) for v in views]
    r["q"] = [model.predictor(tf.constant(o["z"], tf.float32), training=True).numpy() for o in r["on"]]
    r["qr"] = [model.region_predictor(tf.constant(o["regions"], tf.float32), training=True).numpy()
               for o in r["on"]]

    r["m0"] = {k: float(v) for k, v in model.train_on_batch(batch, return_dict=True).items()}
    r["online1"] = _values(model.online_variables)
    r["target1"] = _values(model.target_variables)
    r["pred1"] = _values(model.predictor.trainable_variables + model.region_predictor.trainable_variables)
    r["proto1"] = model.prototypes.numpy().astype(np.float64)
    r["tproto1"] = model.target_prototypes.numpy().astype(np.float64)

    r["m1"] = {k: float(v) for k, v in model.train_on_batch(_views(1), return_dict=True).items()}
    r["online2"] = _values(model.online_variables)
    r["target2"] = _values(model.target_variables)
    return r


# ---------------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------------


def test_initial_state(run):
    model = run["model"]
    assert len(run["online0"]) == len(run["target0"]) > 0
    for o, t, vo, vt in zip(run["online0"], run["target0"], model.online_variables, model.target_variables):
        np.testing.assert_array_equal(o, t)
        assert vo.shape == vt.shape and vo is not vt
        assert vt.path.split("/")[-1] == vo.path.split("/")[-1]
    assert run["proto0"].shape == run["tproto0"].shape == (K, 16)
    assert abs(run["proto0"].std() - 1.0) < 0.35                  # randn init
    assert not model.prototypes.trainable and not model.target_prototypes.trainable
    # the mirrored set is exactly the trainable online backbone + neck
    paths = [v.path for v in model.target_variables]
    assert all(p.startswith("target_neck/") for p in paths[len(model.backbone.trainable_variables):])
    assert len(model.online_variables) == (len(model.backbone.trainable_variables)
                                           + len(model.neck.trainable_variables))
    # the optimiser tracks the online network + predictors only: one momentum each + the iteration count
    optimized_ids = {id(v) for v in model.optimized_variables}
    assert not optimized_ids & {id(v) for v in model.target_variables}
    momentums = [v for v in model.optimizer.variables if "momentum" in v.path]
    assert len(momentums) == len(model.optimized_variables)


def test_target_prototypes_are_their_own_random_draw(run):
    assert not np.allclose(run["proto0"], run["tproto0"])


def test_constructors():
    config = tiny_config(**{**SCHEDULE, "steps_per_epoch": None})
    model = FRA(config.to_dict())                 # FRA(dict)
    assert isinstance(model.config, FRAConfig) and model.config == config
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        model.compile()
    model.compile(steps_per_epoch=3)
    assert model.total_steps == config.epochs * 3
    with pytest.raises(ConfigError, match="config"):
        FRA(42)
    with pytest.raises(ConfigError, match="batch_size"):
        FRA({"batch_size": 0})


def test_config_object_is_kept(run):
    model = run["model"]
    assert isinstance(model, keras.Model)
    assert model.config == tiny_config(**SCHEDULE, **STEP)
    assert model.get_config()["config"] == run["config"].to_dict()


# ---------------------------------------------------------------------------------------------------
# One training step
# ---------------------------------------------------------------------------------------------------


def test_metrics_dict(run):
    for metrics in (run["m0"], run["m1"]):
        assert set(metrics) == EXPECTED_METRICS == set(METRIC_NAMES)
        assert all(np.isfinite(v) for v in metrics.values()), metrics


def test_loss_is_recomputed_from_its_parts(run):
    m = run["m0"]
    total = 2 * LAM * m["loss_global"] + 2 * (1 - LAM) * m["loss_region"] + W_CLU * m["loss_cluster"]
    assert m["loss"] == pytest.approx(total, rel=1e-5)


def test_step_losses_match_numpy(run):
    """The whole objective (docs/method.md, "Losses") recomputed in NumPy from the networks' outputs: cross-view
    pairs for the global and region terms, same-view pairs for the clustering term."""
    on, tg, q, qr, m = run["on"], run["tg"], run["q"], run["qr"], run["m0"]
    g = [np_global(q[0], tg[1]["z"]), np_global(q[1], tg[0]["z"])]
    rg = [np_region(qr[0], tg[1]["regions"]), np_region(qr[1], tg[0]["regions"])]
    cl = [np_cluster(on[v]["logits"].reshape(-1, K), tg[v]["logits"].reshape(-1, K)) for v in (0, 1)]
    assert m["loss_global"] == pytest.approx(0.5 * (g[0] + g[1]), rel=1e-4, abs=1e-5)
    assert m["loss_region"] == pytest.approx(0.5 * (rg[0] + rg[1]), rel=1e-4, abs=1e-5)
    assert m["loss_cluster"] == pytest.approx(0.5 * (cl[0] + cl[1]), rel=1e-4, abs=1e-5)
    total = LAM * (g[0] + g[1]) + (1 - LAM) * (rg[0] + rg[1]) + W_CLU * 0.5 * (cl[0] + cl[1])
    assert m["loss"] == pytest.approx(total, rel=1e-4, abs=1e-5)
    # Control: pairing each view with itself (no cross-view prediction) would be a different number.
    same = [np_global(q[0], tg[0]["z"]), np_global(q[1], tg[1]["z"])]
    assert abs(0.5 * (same[0] + same[1]) - m["loss_global"]) > 1e-3


def test_health_signals_match_numpy(run):
    on, m = run["on"], run["m0"]
    # mean pairwise cosine of the K batch-mean mask embeddings (view 1, online)
    e = _n(on[0]["mask_mean"])
    assert m["mask_cosine"] == pytest.approx(((e @ e.T).sum() - K) / (K * (K - 1)), rel=1e-4, abs=1e-5)
    z = _n(on[0]["z"])
    assert m["z_std"] == pytest.approx(np.mean(np.std(z, axis=0)), rel=1e-4)
    # hard usage: fraction of pixels whose heatmap argmax is region k (view 1, online)
    winners = on[0]["attention"].reshape(-1, K).argmax(-1)
    usage = np.bincount(winners, minlength=K) / winners.size
    used = usage[usage > 0]
    entropy = -np.sum(used * np.log(used)) / math.log(K)
    assert m["region_entropy"] == pytest.approx(entropy, rel=1e-4)
    assert 0.0 < m["region_entropy"] <= 1.0 + 1e-6


def test_ema_momentum_metric(run):
    total = run["config"].total_steps()
    assert run["m0"]["ema_momentum"] == pytest.approx(np_ema(0, total, 0.5), abs=1e-6)
    assert run["m1"]["ema_momentum"] == pytest.approx(np_ema(1, total, 0.5), abs=1e-6)


def test_lr_metric_is_the_lr_used_at_that_step(run):
    c = run["config"]
    for step, m in ((0, run["m0"]), (1, run["m1"])):
        assert m["lr"] == pytest.approx(np_schedule(step, c.learning_rate, c.steps_per_epoch, c.epochs,
                                                    c.warmup_epochs), rel=1e-6)


@pytest.mark.parametrize("step", [0, 1])
def test_target_is_ema_of_online(run, step):
    m = np_ema(step, run["config"].total_steps(), 0.5)
    t_old, t_new, o_new = run[f"target{step}"], run[f"target{step + 1}"], run[f"online{step + 1}"]
    o_old = run[f"online{step}"]
    moved = 0
    for to, tn, on_, oo in zip(t_old, t_new, o_new, o_old):
        np.testing.assert_allclose(tn, m * to + (1 - m) * on_, rtol=1e-5, atol=1e-6)
        if np.abs(on_ - oo).max() > 1e-4:
            moved += 1
            # the check discriminates: neither "no update" nor "copy" would pass
            assert not np.allclose(tn, to, rtol=1e-5, atol=1e-6) or not np.allclose(tn, on_, rtol=1e-5, atol=1e-6)
    assert moved > 0.8 * len(o_new)


def test_predictors_and_online_were_optimised(run):
    changed = [not np.allclose(a, b, atol=1e-7) for a, b in zip(run["pred0"], run["pred1"])]
    assert all(changed)
    online_changed = [not np.allclose(a, b, atol=1e-7) for a, b in zip(run["online0"], run["online1"])]
    assert sum(online_changed) > 0.9 * len(online_changed)
    assert int(run["model"].optimizer.iterations.numpy()) >= 2


def test_prototypes_ema_once_per_view(run):
    """proto <- 0.9 proto + 0.1 e, once per forward (view 1 then view 2), for each network's own buffer."""
    for key, outs in (("proto", run["on"]), ("tproto", run["tg"])):
        e1, e2 = outs[0]["mask_mean"], outs[1]["mask_mean"]
        np.testing.assert_allclose(e1, outs[0]["masks"].mean(0), rtol=1e-5, atol=1e-6)
        p0, p1 = run[f"{key}0"], run[f"{key}1"]
        expected = 0.9 * (0.9 * p0 + 0.1 * e1) + 0.1 * e2
        np.testing.assert_allclose(p1, expected, rtol=1e-5, atol=1e-5, err_msg=key)
        assert np.abs(p1 - p0).max() > 1e-2


# ---------------------------------------------------------------------------------------------------
# Inference helpers, backbone, save / load
# ---------------------------------------------------------------------------------------------------


def test_backbone_alone_and_embed(run):
    model, config = run["model"], run["config"]
    backbone = model.backbone
    assert isinstance(backbone, keras.Model)
    x = _views(2)["view1"]
    features = backbone(x, training=False).numpy()
    g = config.feature_grid
    assert features.shape == (B, g, g, config.feature_channels)
    assert backbone.count_params() == build_backbone(config).count_params()
    clone = keras.Model(backbone.input, backbone.output)   # usable as a plain functional graph
    np.testing.assert_allclose(clone(x, training=False), features, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.embed(x).numpy(), features.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(x).numpy(), features.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_heatmaps_match_numpy(run):
    model = run["model"]
    x = _views(3)["view1"]
    heat = model.heatmaps(x).numpy()
    g = run["config"].feature_grid
    assert heat.shape == (B, g, g, K)
    np.testing.assert_allclose(heat.sum(-1), 1.0 + K * 1e-7, atol=1e-5)
    # independent recomputation: inference-mode pixel projector against the prototype buffer
    f = model.backbone(x, training=False).numpy().astype(np.float64)
    head = model.neck.pixel_proj
    h = f @ head.dense1.kernel.numpy()
    h = ((h - head.norm.moving_mean.numpy()) / np.sqrt(head.norm.moving_variance.numpy() + 1e-5)
         * head.norm.gamma.numpy() + head.norm.beta.numpy())
    pixel = np.maximum(h, 0) @ head.dense2.kernel.numpy()
    logits = np.einsum("bhwd,kd->bhwk", _n(pixel), _n(model.prototypes.numpy()))
    np.testing.assert_allclose(heat, _softmax(logits / run["config"].heatmap_scale) + 1e-7, rtol=1e-4, atol=1e-5)


def test_keras_save_and_load(run, tmp_path):
    model = run["model"]
    path = str(tmp_path / "fra.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)       # no custom_objects: everything is registered
    assert isinstance(loaded, FRA)
    assert loaded.config == model.config
    x = _views(4)["view1"]
    np.testing.assert_allclose(loaded.embed(x).numpy(), model.embed(x).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.heatmaps(x).numpy(), model.heatmaps(x).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(loaded.prototypes.numpy(), model.prototypes.numpy())
    np.testing.assert_array_equal(loaded.target_prototypes.numpy(), model.target_prototypes.numpy())
    for a, b in zip(loaded.target_variables, model.target_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(loaded.predictor.weights, model.predictor.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the optimiser state travels too (resuming keeps the schedules' step count)
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) >= 2
    # the backbone alone from the same file
    backbone = load_backbone(path)
    np.testing.assert_allclose(backbone(x, training=False), model.backbone(x, training=False),
                               rtol=1e-6, atol=1e-6)


def test_fit_a_few_steps(run):
    model = run["model"]
    batch = _views(5)
    ds = tf.data.Dataset.from_tensor_slices(batch).batch(B, drop_remainder=True).repeat()
    history = model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0)
    assert EXPECTED_METRICS <= set(history.history)
    for name in EXPECTED_METRICS:
        assert np.isfinite(history.history[name]).all(), name
    for v in model.online_variables + model.target_variables:
        assert np.isfinite(v.numpy()).all(), v.path


# ---------------------------------------------------------------------------------------------------
# Plain BYOL (region_losses=False)
# ---------------------------------------------------------------------------------------------------


def test_plain_byol():
    model = FRA.from_preset("tiny", **tiny_overrides(**SCHEDULE, region_losses=False))
    assert model.config == tiny_config(**SCHEDULE, region_losses=False)
    assert model.region_predictor is None
    assert not hasattr(model.neck, "mask_decoder") and not hasattr(model.neck, "pixel_proj")
    assert all("/proj/" in v.path for v in model.neck.trainable_variables)
    with pytest.raises(ValueError, match="region"):
        model.heatmaps(np.zeros((1, 64, 64, 3), "float32"))
    model.compile(run_eagerly=True)   # eager: the graph-mode step is covered by the module fixture
    batch = _views(6)
    views = (batch["view1"], batch["view2"])
    on = [_np_outputs(model._run_network(model.backbone, model.neck, v, True)) for v in views]
    tg = [_np_outputs(model._run_network(model.target_backbone, model.target_neck, v, True)) for v in views]
    q = [model.predictor(tf.constant(o["z"], tf.float32), training=True).numpy() for o in on]
    proto = model.prototypes.numpy()
    m = {k: float(v) for k, v in model.train_on_batch(batch, return_dict=True).items()}
    assert set(m) == EXPECTED_METRICS
    g = [np_global(q[0], tg[1]["z"]), np_global(q[1], tg[0]["z"])]
    assert m["loss_global"] == pytest.approx(0.5 * (g[0] + g[1]), rel=1e-4, abs=1e-5)
    assert m["loss"] == pytest.approx(2 * m["loss_global"], rel=1e-6)
    assert m["loss_region"] == 0.0 and m["loss_cluster"] == 0.0
    assert all(np.isfinite(v) for v in m.values())
    np.testing.assert_array_equal(model.prototypes.numpy(), proto)
