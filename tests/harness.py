"""Shared test helpers: the one tiny FRA configuration, BatchNorm perturbation, and `run_layer_test`.

Import from any test module (pytest puts tests/ on `sys.path`): `from harness import tiny_config`.
Session-scoped fixtures built from these helpers (the tiny export) live in tests/conftest.py.

* `tiny_config(**overrides)`: the tiny preset at 64 px with 8-wide ResNet-18 and 16-wide heads, batch
  4, one epoch of 2 steps, same-view clustering targets (see `TINY`); a test overrides only what it is about (`steps_per_epoch=5`, `precision=...`).
* `tiny_model(seed, **overrides)`: `FRA(tiny_config(**overrides))` from a fixed seed;
  `save_run(model, folder)` writes it as a pre-training run folder.
* `PRETRAIN_SMALL`: the tiny model as `python -m fra_keras.pretrain` flags (8 synthetic faces, 2 steps
  per epoch, 1 warm-up epoch, no heatmap pictures), for the CLI tests and their shared runs.
* `two_view_batch(batch, seed, geometry)`: random views (and crop geometries) for one `train_on_batch`.
* `perturb_batchnorm(model, seed, ...)`: non-trivial BatchNorm statistics, so that an export or a copy
  that drops them is caught.
* `randomize_weights(layer, rng)`: every weight random, so that no term of a layer is silently zero.
* `run_layer_test(layer_cls, kwargs, input_shapes, expected_output_shape)`: the checks every custom
  layer must pass (docs/design.md, "Tests").
* `export_reference(model, head, images)`, `load_client(name)`: for the tests of the export and of
  serving (tests/test_export.py, tests/test_serving_contract.py).
"""

from __future__ import annotations

import inspect
import os
import tempfile
import types

import numpy as np

from fra_keras.config import FRAConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The sizes of the tiny test model (64 px, a ResNet-18 of width 8, heads of 16-32 units): every test
#: that builds a model starts from these, and adds its batch, schedule and loss fields.
SMALL_MODEL = types.MappingProxyType(dict(
    image_size=64, backbone_width=8, hidden_dim=32, proj_dim=16, decoder_dim=16, decoder_ffn_dim=16,
    decoder_heads=2))

#: The tiny test model's overrides of the `tiny` preset (read-only; `tiny_config` copies it). Its
#: clustering loss is the reference's (same-view targets, weight 0.1), so that the many tests that feed
#: hand-made view pairs need no crop geometries; the preset's cross-view default is exercised through
#: the pipeline by the CLI tests (`PRETRAIN_SMALL`) and by tests/test_cross_view.py.
TINY = types.MappingProxyType(dict(
    **SMALL_MODEL, batch_size=4, steps_per_epoch=2, epochs=1, warmup_epochs=0,
    cluster_targets="same_view", cluster_loss_weight=0.1))


#: The tiny model as `python -m fra_keras.pretrain` flags (read-only; `list(PRETRAIN_SMALL) + [...]`).
PRETRAIN_SMALL = (
    "--image-size", "64", "--backbone-width", "8", "--hidden-dim", "32", "--proj-dim", "16",
    "--decoder-dim", "16", "--decoder-ffn-dim", "16", "--decoder-heads", "2", "--batch-size", "4",
    "--synthetic-samples", "8", "--synthetic-size", "64", "--steps-per-epoch", "2",
    "--warmup-epochs", "1", "--heatmap-every", "0")


def load_benchmark(name: str):
    """Import `benchmarks/<name>.py` (not a package) as a module."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def subprocess_env(**extra) -> dict:
    """os.environ with this checkout first on PYTHONPATH (and `extra`), for `python -m fra_keras...`."""
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


def tiny_overrides(**overrides) -> dict:
    """The `tiny` preset overrides of the tiny test model, updated with `overrides` (a new dict)."""
    return {**TINY, **overrides}


def tiny_config(**overrides) -> FRAConfig:
    """`FRAConfig.from_preset("tiny", **tiny_overrides(**overrides))`."""
    return FRAConfig.from_preset("tiny", **tiny_overrides(**overrides))


def tiny_model(seed: int = 0, **overrides):
    """A tiny `FRA` built after `keras.utils.set_random_seed(seed)` (same seed, same weights)."""
    import keras

    from fra_keras.models.fra import FRA

    keras.utils.set_random_seed(seed)
    return FRA(tiny_config(**overrides))


def save_run(model, folder) -> dict:
    """Write `model` as a pre-training run folder does: model.keras, backbone.weights.h5, config.json.
    Returns {"run", "model", "weights", "config"}: the folder and the three paths."""
    os.makedirs(folder, exist_ok=True)
    paths = {"run": str(folder), "model": os.path.join(folder, "model.keras"),
             "weights": os.path.join(folder, "backbone.weights.h5"), "config": os.path.join(folder, "config.json")}
    model.save(paths["model"])
    model.backbone.save_weights(paths["weights"])
    model.config.to_json(paths["config"])
    return paths


def two_view_batch(batch: int, seed: int = 0, geometry: bool = False, size: int = 64) -> dict:
    """Random normalised views (batch, size, size, 3) under "view1" / "view2"; `geometry`: also random crop
    geometries "view<i>_geometry" (batch, 5) = (top, left, bottom, right, flipped) for cross-view
    targets, boxes of side 0.3-0.5 so that views overlap on different numbers of cells."""
    rng = np.random.default_rng(seed)
    out = {k: rng.normal(size=(batch, size, size, 3)).astype("float32") for k in ("view1", "view2")}
    if geometry:
        for view in ("view1", "view2"):
            lo = rng.uniform(0.0, 0.5, size=(batch, 2))
            hi = lo + rng.uniform(0.3, 0.5, size=(batch, 2))
            out[view + "_geometry"] = np.concatenate([lo, hi, rng.integers(0, 2, size=(batch, 1))],
                                                     axis=1).astype("float32")
    return out


def perturb_batchnorm(model, seed: int = 0, mean_std: float = 0.2, variance=(0.5, 1.5), gamma_scale=None):
    """Random moving statistics in every BatchNorm of `model.backbone` and in the pixel projector's.

    Per layer of n channels, from `np.random.RandomState(seed)` in this order: moving mean N(0, mean_std),
    moving variance U(*variance), and with `gamma_scale` a gamma U(0.5, 1.5) * U(*gamma_scale) (one
    scale per layer, so that output scales vary as in trained models).
    """
    import keras

    rng = np.random.RandomState(seed)
    norms = [l for l in model.backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    for layer in norms + [model.neck.pixel_proj.norm]:
        n = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(0.0, mean_std, n).astype("float32"))
        layer.moving_variance.assign(rng.uniform(*variance, n).astype("float32"))
        if gamma_scale is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32") * rng.uniform(*gamma_scale))


def randomize_weights(layer, rng, scale: float = 0.3, statistics: bool = False):
    """Every trainable weight of a built `layer` random: gammas U(0.5, 1.5), the rest N(0, scale).

    With `statistics=True` the non-trainable float weights too (BatchNorm moving variances U(0.5, 1.5),
    moving means N(0, scale)). Drawn from `rng` (a `np.random.Generator`) in `layer.weights` order.
    """
    for v in layer.weights:
        if not v.trainable and not (statistics and "float" in str(v.dtype)):
            continue
        if v.path.endswith(("gamma", "moving_variance")):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
        else:
            v.assign(rng.normal(0, scale, v.shape).astype("float32"))


# Export and serving -------------------------------------------------------------------------------
def export_reference(model, head, images) -> dict:
    """uint8 images (B, H, W, 3) -> the Keras outputs an export must reproduce, computed here
    independently of fra_keras.export: resize, normalise, backbone, embedding, heatmaps, head."""
    import tensorflow as tf

    c = model.config
    x = tf.image.resize(tf.cast(images, tf.float32) / 255.0, [c.image_size, c.image_size], method="bilinear")
    x = (x - tf.constant(c.mean)) / tf.constant(c.std)
    features = model.backbone(x, training=False)
    return {"embedding": model.embed(x).numpy(), "feature_map": features.numpy(),
            "heatmaps": model.heatmaps(x).numpy(), "expression_logits": head(features).numpy()}


def load_client(name: str):
    """The serving client export/clients/NAME.py, imported as a module."""
    import importlib.util

    path = os.path.join(ROOT, "export", "clients", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"fra_export_client_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# run_layer_test ------------------------------------------------------------------------------------
MIXED_POLICY = "mixed_float16"


def _shapes(structure):
    import keras

    return keras.tree.map_structure(lambda t: tuple(int(d) for d in t.shape), structure)


def _numpy(structure):
    import keras

    return keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), structure)


def _assert_same_outputs(actual, expected, label, rtol=1e-6, atol=1e-6):
    """Same structure (a functional model returns a list where the layer returns a tuple), same values."""
    import keras

    if isinstance(actual, list):
        actual = tuple(actual)
    keras.tree.assert_same_structure(actual, expected)
    for a, e in zip(keras.tree.flatten(_numpy(actual)), keras.tree.flatten(_numpy(expected))):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=label)


def _init_parameters(layer_cls):
    """Names of `layer_cls.__init__`'s own arguments (not `self`, `*args`, `**kwargs`)."""
    params = inspect.signature(layer_cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self"
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def run_layer_test(layer_cls, kwargs, input_shapes, expected_output_shape, *, mixed_output_dtypes=None,
                   call_kwargs=None, seed: int = 0):
    """Check one custom Keras layer end to end; return the float32 layer (built, random weights).

    Args:
      layer_cls: the layer class. kwargs: its constructor arguments; pass non-default values, since
        they are checked to come back from `get_config`.
      input_shapes: the shape of the one input, or a list of shapes for several positional inputs
        (inputs are N(0, 1) float32 drawn from `seed`).
      expected_output_shape: the output shapes with the output's structure: a tuple of ints, a tuple of
        shapes (several outputs) or a dict of shapes.
      mixed_output_dtypes: the output dtypes under `mixed_float16`, same structure as the output
        (default: every output float16, the compute dtype).
      call_kwargs: extra call arguments; `training=False` is added when `call` takes `training`.

    Checks, in order:
      1. the output shapes, and `compute_output_shape` when the layer defines it;
      2. `get_config` holds every `__init__` argument with the given values; `from_config` and Keras
         (de)serialisation by registered name give the same config; with the same weights the
         clone gives the same outputs;
      3. a `keras.Model` wrapping the layer, saved to `.keras` and loaded without `custom_objects`,
         holds a `layer_cls` and gives the same outputs;
      4. with `dtype="mixed_float16"`: every sub-layer computes in float16, every variable stays
         float32, the outputs have `mixed_output_dtypes` and are close to the float32 outputs for the
         same weights, and the policy survives `get_config` / `from_config`.
    Every weight, BatchNorm statistics included, is random before 2-4, so that a copy which loses any
    weight gives other outputs.
    """
    import keras

    single = isinstance(input_shapes[0], int)
    shapes = [tuple(input_shapes)] if single else [tuple(s) for s in input_shapes]
    rng = np.random.default_rng(seed)
    inputs = [rng.normal(size=s).astype("float32") for s in shapes]
    call_kwargs = dict(call_kwargs or {})
    if "training" in inspect.signature(layer_cls.call).parameters:
        call_kwargs.setdefault("training", False)
    name = layer_cls.__name__

    # 1. Output shapes.
    keras.utils.set_random_seed(seed)
    layer = layer_cls(**kwargs)
    outputs = layer(*inputs, **call_kwargs)
    assert _shapes(outputs) == expected_output_shape, (name, _shapes(outputs), expected_output_shape)
    if type(layer).compute_output_shape is not keras.layers.Layer.compute_output_shape:
        predicted = layer.compute_output_shape(*shapes)
        assert predicted == expected_output_shape, (name, "compute_output_shape", predicted)
    randomize_weights(layer, rng, statistics=True)
    outputs = layer(*inputs, **call_kwargs)

    # 2. get_config round trip.
    config = layer.get_config()
    missing = [p for p in _init_parameters(layer_cls) if p not in config]
    assert not missing, f"{name}.get_config() lacks __init__ arguments {missing}"
    for key, value in kwargs.items():
        assert config[key] == value, (name, key, config[key], value)
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config, name
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is layer_cls and again.get_config() == config, name
    clone(*inputs, **call_kwargs)
    clone.set_weights(layer.get_weights())
    _assert_same_outputs(clone(*inputs, **call_kwargs), outputs, f"{name} from_config")

    # 3. .keras round trip of a model wrapping the layer.
    symbolic = [keras.Input(s[1:], batch_size=s[0]) for s in shapes]
    model = keras.Model(symbolic[0] if single else symbolic, layer(*symbolic))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "layer.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    assert any(type(l) is layer_cls for l in loaded.layers), (name, [type(l) for l in loaded.layers])
    model_inputs = inputs[0] if single else inputs
    _assert_same_outputs(loaded(model_inputs, training=False), outputs, f"{name} .keras")

    # 4. Mixed precision.
    keras.utils.set_random_seed(seed)
    mixed = layer_cls(**kwargs, dtype=MIXED_POLICY)
    mixed(*inputs, **call_kwargs)
    mixed.set_weights(layer.get_weights())
    for sub in mixed._flatten_layers(include_self=True):
        assert (sub.compute_dtype, sub.variable_dtype) == ("float16", "float32"), (name, sub.name, sub.dtype_policy)
    assert {str(v.dtype) for v in mixed.weights} <= {"float32"}, (name, {v.path: v.dtype for v in mixed.weights})
    mixed_outputs = mixed(*inputs, **call_kwargs)
    dtypes = keras.tree.map_structure(lambda t: keras.backend.standardize_dtype(t.dtype), mixed_outputs)
    if mixed_output_dtypes is None:
        mixed_output_dtypes = keras.tree.map_structure(lambda _: "float16", mixed_outputs)
    assert dtypes == mixed_output_dtypes, (name, dtypes)
    # float16 rounding (eps 9.8e-4): the layers of tests/test_layers.py differ by at most 7.4e-4 x (1 + max|ref|).
    for m, r in zip(keras.tree.flatten(_numpy(mixed_outputs)), keras.tree.flatten(_numpy(outputs))):
        np.testing.assert_allclose(m.astype("float32"), r, rtol=0, atol=5e-3 * (1.0 + np.abs(r).max()),
                                   err_msg=f"{name} mixed_float16 vs float32")
    mixed_clone = layer_cls.from_config(mixed.get_config())
    assert {sub.dtype_policy.name for sub in mixed_clone._flatten_layers(include_self=True)} == {MIXED_POLICY}, name
    return layer


def assert_uniform_jitter_factors(draws):
    """The colour-jitter and blur factors of many augmentation draws are uniform on the paper's ranges
    (docs/data_pipeline.md, "Augmentations as implemented"): inside the range, mean at its centre, spread reaching both ends.
    `draws`: {name: (N,) NumPy array} with brightness, contrast, saturation, hue and blur_sigma."""
    for key, lo, hi in [("brightness", 0.6, 1.4), ("contrast", 0.6, 1.4), ("saturation", 0.8, 1.2),
                        ("hue", -0.1, 0.1), ("blur_sigma", 0.1, 2.0)]:
        v = draws[key]
        assert v.min() >= lo and v.max() <= hi, key
        assert abs(v.mean() - (lo + hi) / 2) < 0.05 * (hi - lo), key
        assert v.min() < lo + 0.02 * (hi - lo) and v.max() > hi - 0.02 * (hi - lo), key
