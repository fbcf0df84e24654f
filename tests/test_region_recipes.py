"""The opt-in region recipe flags (docs/method.md "Region recipes") against NumPy; the reference path
is unchanged by default (the loss-parity tests in test_losses.py / test_fra_model.py keep it so)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from harness import tiny_config

from fra_keras import losses
from fra_keras.config import ConfigError, FRAConfig


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_sinkhorn(q_in, iterations=3):
    """Sinkhorn-Knopp as docs/method.md, "Clustering loss and Sinkhorn", describes it (single device)."""
    q = q_in.T / q_in.sum()
    k, n = q.shape
    for _ in range(iterations):
        q = q / q.sum(axis=1, keepdims=True) / k
        q = q / q.sum(axis=0, keepdims=True) / n
    return (q * n).T


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.2])
def test_sinkhorn_input_matches_numpy(eps):
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, size=(50, 6))
    p = np_softmax(t / 0.04)
    expected = p if eps == 0.0 else np.exp((p - 1.0) / eps)   # exp(P / eps) up to a constant factor
    np.testing.assert_allclose(losses.sinkhorn_input(t, 0.04, eps).numpy(), expected, rtol=1e-5, atol=1e-30)


def test_swav_sinkhorn_clustering_loss_matches_numpy():
    rng = np.random.default_rng(1)
    s, t = rng.uniform(-1, 1, size=(2, 64, 8))
    for eps in (0.0, 0.05):
        p = np_softmax(t / 0.04)
        q_in = p if eps == 0.0 else np.exp(p / eps)   # the official code's commented-out line, as written
        q = np_sinkhorn(q_in)
        log_p = np.log(np_softmax(s / 0.1))
        mean_p = np_softmax(s / 0.1).mean(0)
        expected = np.mean(np.sum(-q * log_p, -1)) + np.sum(mean_p * np.log(mean_p)) + math.log(8)
        got = float(losses.clustering_loss(s, t, 0.1, 0.04, 3, 1.0, sinkhorn_epsilon=eps))
        assert got == pytest.approx(expected, rel=1e-5)
    # nearly uniform teacher probabilities: exp(P / eps) sharpens the targets (what wakes the branch)
    flat = rng.uniform(-0.01, 0.01, size=(64, 8))
    plain = losses.sinkhorn(losses.sinkhorn_input(flat, 0.04, 0.0)).numpy()
    sharp = losses.sinkhorn(losses.sinkhorn_input(flat, 0.04, 0.05)).numpy()
    assert sharp.max(-1).mean() > plain.max(-1).mean() + 0.01


def test_paper_preset_is_the_reference_and_tiny_uses_the_recipe():
    paper = FRAConfig.from_preset("paper")
    assert (paper.decoder_query_content, paper.sinkhorn_epsilon, paper.cluster_warmup_epochs) == (False, 0.0, 0)
    assert paper.heatmap_scale == 1.0 and FRAConfig() == paper
    tiny = FRAConfig.from_preset("tiny")
    assert (tiny.decoder_query_content, tiny.sinkhorn_epsilon, tiny.cluster_warmup_epochs) == (True, 0.05, 0)
    assert tiny.synthetic_profile == paper.synthetic_profile == "crop"
    back = FRAConfig.from_preset("tiny", decoder_query_content=False, sinkhorn_epsilon=0.0)
    assert back == tiny.replace(decoder_query_content=False, sinkhorn_epsilon=0.0)


def test_recipe_fields_validate():
    with pytest.raises(ConfigError, match="sinkhorn_epsilon=-0.1"):
        FRAConfig(sinkhorn_epsilon=-0.1)
    with pytest.raises(ConfigError, match="cluster_warmup_epochs=-1"):
        FRAConfig(cluster_warmup_epochs=-1)
    with pytest.raises(ConfigError, match="decoder_query_content='yes'"):
        FRAConfig(decoder_query_content="yes")
    with pytest.raises(ConfigError, match="synthetic_profile='tight'"):
        FRAConfig(synthetic_profile="tight")


def test_recipe_flags_reach_the_cli_parser():
    from fra_keras import pretrain

    args = pretrain.build_parser().parse_args(["--decoder-query-content", "true", "--sinkhorn-epsilon", "0.05",
                                               "--cluster-warmup-epochs", "2", "--synthetic-profile", "wide"])
    config, _, _ = pretrain.resolve_config(args)
    assert (config.decoder_query_content, config.sinkhorn_epsilon, config.cluster_warmup_epochs,
            config.synthetic_profile) == (True, 0.05, 2, "wide")


def test_cluster_weight_ramp():
    from fra_keras.models.fra import FRA

    config = tiny_config(epochs=4, steps_per_epoch=5, warmup_epochs=1, cluster_loss_weight=0.1)
    flat = FRA(config)
    assert [float(flat.cluster_weight(t)) for t in (0, 7, 19)] == pytest.approx([0.1] * 3)
    ramped = FRA(config.replace(cluster_warmup_epochs=2))     # ramp over 2 epochs x 5 steps
    got = [float(ramped.cluster_weight(t)) for t in (0, 4, 9, 10, 19)]
    assert got == pytest.approx([0.01, 0.05, 0.1, 0.1, 0.1])


def test_evaluation_baselines_match_numpy():
    """Every report metric has a direction and a label-only baseline (recomputed here in NumPy)."""
    from fra_keras.downstream.metrics import landmark_nme
    from fra_keras.downstream.tasks import baselines, metric_direction

    rng = np.random.default_rng(2)
    train, test = rng.integers(0, 7, 200), rng.integers(0, 7, 90)
    got = baselines("expression", train, test, 7)
    majority = np.bincount(train, minlength=7).argmax()
    assert got["top1_accuracy"][0] == pytest.approx(np.mean(test == majority))
    assert got["mean_class_accuracy"][0] == pytest.approx(1 / 7)
    a_train, a_test = rng.choice([-1, 0, 1], size=(50, 40)), rng.choice([-1, 0, 1], size=(30, 40))
    pos = (a_train == 1).sum(0) >= (a_train == 0).sum(0)
    known = a_test >= 0
    expected = np.sum((a_test == pos[None]) & known) / known.sum()
    assert baselines("attributes", a_train, a_test)["attribute_accuracy"][0] == pytest.approx(expected)
    l_train, l_test = rng.normal(50, 10, size=(40, 68, 2)), rng.normal(50, 10, size=(20, 68, 2))
    mean_shape = np.broadcast_to(l_train.mean(0), l_test.shape)
    assert baselines("landmarks", l_train, l_test)["nme"][0] == pytest.approx(landmark_nme(mean_shape, l_test).mean())
    assert [metric_direction(k) for k in ("synthetic_nme", "rafdb_top1_accuracy", "synthetic_knn_top1_accuracy",
                                          "celeba_attribute_accuracy", "synthetic_failure_rate_10")] == \
        ["lower", "higher", "higher", "higher", "lower"]


def test_model_clustering_term_uses_the_recipe():
    """The model's clustering loss is the NumPy recomputation with Sinkhorn on exp(P / eps), and the
    content queries are trainable online variables mirrored by the target (EMA)."""
    import tensorflow as tf

    from fra_keras.models.fra import FRA

    config = tiny_config(decoder_dropout=0.0, decoder_query_content=True, sinkhorn_epsilon=0.05)
    model = FRA(config)
    names = [v.path for v in model.online_variables]
    assert "neck/mask_decoder/query_content" in names
    assert "target_neck/mask_decoder/query_content" in [v.path for v in model.target_variables]
    rng = np.random.default_rng(3)
    views = [tf.constant(rng.normal(size=(2, 64, 64, 3)), tf.float32) for _ in range(2)]
    online = [model._run_network(model.backbone, model.neck, v, True) for v in views]
    target = [model._run_network(model.target_backbone, model.target_neck, v, True) for v in views]
    _, parts = model._compute_losses(online, target)
    k = config.num_regions
    expected = []
    for o, t in zip(online, target):
        s = np.asarray(o["logits"], np.float64).reshape(-1, k)
        p = np_softmax(np.asarray(t["logits"], np.float64).reshape(-1, k) / 0.04)
        q = np_sinkhorn(np.exp(p / 0.05))
        probs = np_softmax(s / 0.1)
        expected.append(np.mean(np.sum(-q * np.log(probs), -1)) + np.sum(probs.mean(0) * np.log(probs.mean(0)))
                        + math.log(k))
    assert float(parts["loss_cluster"]) == pytest.approx(0.5 * sum(expected), rel=1e-4)
