"""Mixed precision and XLA: one training step of the tiny model against the float32 eager step.

* mixed_bfloat16: layers compute in bfloat16, variables stay float32 (also in checkpoints), the heatmap
  logits / attention and every loss are float32; the step's loss is within 2 % of the float32 loss.
* mixed_float16: the optimiser is wrapped in a LossScaleOptimizer; the step runs on CPU (TF has
  float16 CPU kernels for every op of the step) and its loss is close to float32.
* XLA (`jit_compile=True`) on one CPU device: the whole train step compiles and gives the float32
  loss and updates to float tolerance.
All models start from the same weights and see the same batch; `decoder_dropout=0.0`.
"""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
from harness import tiny_config, tiny_model

from fra_keras import losses
from fra_keras.models.fra import FRA, resolve_jit_compile

NO_DROPOUT = dict(decoder_dropout=0.0)


def _batch():
    rng = np.random.default_rng(3)
    return {k: rng.normal(size=(4, 64, 64, 3)).astype("float32") for k in ("view1", "view2")}


@pytest.fixture(scope="module")
def reference():
    """The float32 eager step: initial weights, logs and weights after the step."""
    model = tiny_model(2, **NO_DROPOUT)
    model.compile(run_eagerly=True)
    initial = model.get_weights()
    logs = model.train_on_batch(_batch(), return_dict=True)
    return dict(initial=initial, logs=logs, after=model.get_weights())


def _step(reference, compile_kwargs=None, **overrides):
    model = FRA(tiny_config(**NO_DROPOUT, **overrides))
    model.compile(**(compile_kwargs or {"run_eagerly": True}))
    model.set_weights(reference["initial"])
    logs = model.train_on_batch(_batch(), return_dict=True)
    return model, logs


def _all_float32(model):
    """Model variables and the optimiser's floating-point slots are float32 (counters are int64)."""
    dtypes = {str(v.dtype) for v in model.weights}
    dtypes |= {str(v.dtype) for v in model.optimizer.variables if "iteration" not in v.path
               and "step_counter" not in v.path}
    return dtypes == {"float32"}


def _index(model, variable):
    return [id(v) for v in model.weights].index(id(variable))


def test_bfloat16_step_close_to_float32(reference, tmp_path):
    model, logs = _step(reference, precision="mixed_bfloat16")
    assert model.backbone.compute_dtype == "bfloat16" and model.neck.compute_dtype == "bfloat16"
    assert _all_float32(model)
    assert np.isfinite(logs["loss"])
    assert logs["loss"] == pytest.approx(reference["logs"]["loss"], rel=2e-2)
    for name in ("loss_global", "loss_region", "loss_cluster"):
        assert logs[name] == pytest.approx(reference["logs"][name], rel=5e-2), name

    # The heatmap maths and the losses run in float32 even though the layers compute in bfloat16.
    features = model.backbone(_batch()["view1"], training=True)
    assert features.dtype == "bfloat16"
    out = model.neck(features, training=True)
    assert out["z"].dtype == "bfloat16"
    for key in ("mask_mean", "logits", "attention"):
        assert out[key].dtype == "float32", key
    k = model.config.num_regions
    logits = np.reshape(out["logits"], (-1, k))
    assert losses.clustering_loss(logits.astype("float32"), logits).dtype == "float32"
    assert losses.region_loss(out["regions"], out["regions"]).dtype == "float32"
    assert losses.cosine_regression_loss(out["z"], out["z"]).dtype == "float32"

    # Checkpoints hold float32 variables.
    path = str(tmp_path / "mixed.weights.h5")
    model.save_weights(path)
    dtypes = set()
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: dtypes.add(str(obj.dtype)) if isinstance(obj, h5py.Dataset) else None)
    assert dtypes <= {"float32", "int64"} and "float32" in dtypes, dtypes


def test_float16_step_with_loss_scaling_runs_on_cpu(reference):
    model, logs = _step(reference, precision="mixed_float16")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.backbone.compute_dtype == "float16"
    assert _all_float32(model)
    assert np.isfinite(logs["loss"])
    assert logs["loss"] == pytest.approx(reference["logs"]["loss"], rel=2e-2)
    # Dynamic loss scaling: a step whose scaled float16 gradients overflow is skipped and the scale
    # halved (Keras starts at 2**15, like PyTorch's GradScaler at 2**16); within a few steps the
    # scale fits and the update is applied.
    scale0 = float(model.optimizer.dynamic_scale.numpy())
    for _ in range(20):
        if int(model.optimizer.iterations.numpy()) >= 1:
            break
        logs = model.train_on_batch(_batch(), return_dict=True)
        assert np.isfinite(logs["loss"])
    assert int(model.optimizer.iterations.numpy()) >= 1, "every float16 step was skipped"
    assert float(model.optimizer.dynamic_scale.numpy()) <= scale0
    online = model.online_variables[0]
    assert not np.array_equal(np.asarray(online), reference["initial"][_index(model, online)])


def test_xla_step_compiles_and_matches_eager(reference):
    model, logs = _step(reference, compile_kwargs={"jit_compile": True})
    assert model.jit_compile is True                 # Keras did not turn XLA off
    for name, value in reference["logs"].items():
        assert logs[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    worst = 0.0
    for a, b, start in zip(model.get_weights(), reference["after"], reference["initial"]):
        update = np.linalg.norm(b.astype(np.float64) - start)
        # float32 floor: weights are stored to ~1e-7 of their size, so an update smaller than ~1e-6 of
        # the weight norm (the EMA target's q/k kernels move by ~2e-6) cannot be compared finer.
        floor = 1e-6 * (np.linalg.norm(start.astype(np.float64)) + 1.0)
        worst = max(worst, np.linalg.norm(a.astype(np.float64) - b) / (update + floor))
    assert worst < 3e-2


def test_jit_compile_auto_rules(monkeypatch, two_logical_cpus):
    import tensorflow as tf

    assert resolve_jit_compile("auto") is False     # no GPU / TPU in the test environment
    assert resolve_jit_compile("true") is True and resolve_jit_compile(False) is False
    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else real(kind))
    assert resolve_jit_compile("auto") is True      # one GPU replica
    # several replicas: off, as Keras' own "auto" (the fixture fails the test when it has no two devices)
    assert resolve_jit_compile("auto", tf.distribute.MirroredStrategy(two_logical_cpus[:2])) is False


# benchmarks/gpu_benchmark.py ----------------------------------------------------------------------
def _gpu_benchmark():
    from harness import load_benchmark

    return load_benchmark("gpu_benchmark")


def test_gpu_benchmark_batch_search_finds_the_largest_fit():
    bench = _gpu_benchmark()
    limit = 300

    def trial(b):
        return {"batch_size": b, "fits": b <= limit}

    tried = [r["batch_size"] for r in bench.search(trial, start=64, max_batch=2048, refine=2, report=lambda r: None)]
    assert tried == [64, 128, 256, 512, 384, 320]           # doubling, then two bisection steps
    assert max(b for b in tried if b <= limit) == 256
    tried = [r["batch_size"] for r in bench.search(trial, start=1024, max_batch=2048, refine=0,
                                                     report=lambda r: None)]
    assert tried == [1024, 512, 256]                         # halving when the first size fails


def test_gpu_benchmark_smoke_mode_runs_on_cpu(tmp_path, capsys):
    bench = _gpu_benchmark()
    out = tmp_path / "gpu.json"
    assert bench.main(["--smoke", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "largest batch that fits: 4" in text               # batch 8 and 6 hit the simulated OOM
    import json

    data = json.load(open(out))
    assert data["largest"]["batch_size"] == 4 and data["largest"]["samples_per_s"] > 0
    assert data["largest"]["peak_bytes"] > 0
    assert [r["batch_size"] for r in data["results"]] == [2, 4, 8, 6]
