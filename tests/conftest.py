"""Test-session set-up: quiet TensorFlow, two logical CPU devices, and the `slow` marker.

Two logical CPU devices are configured before any TensorFlow op runs, so that distribution tests can
build a two-replica MirroredStrategy on a CPU-only machine (docs/stack.md, "Distribution, XLA and
precision"). Single-device tests are not affected: the default strategy places everything on the first
device.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


def _configure_devices():
    from fra_keras.cli_utils import quiet_tensorflow

    tf = quiet_tensorflow()
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    except RuntimeError:  # already initialised by an earlier import; distribution tests will skip
        pass


_configure_devices()


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow (paper-size steps, long runs)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# Shared fixtures (helpers in tests/harness.py) ---------------------------------------------------
@pytest.fixture(scope="session")
def tiny_fra():
    """`harness.tiny_model(0)`, built once per session. Read-only: a test that compiles, trains or
    assigns weights builds its own with `tiny_model`."""
    from harness import tiny_model

    return tiny_model(0)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """{run, model, weights, head, out, sm, onnx}: paths of one tiny run folder (perturbed BatchNorm
    statistics), an expression head, and their export through the CLI entry point in-process
    (`fra/1`, SavedModel and ONNX). Built once per session; tests must not modify these files."""
    import keras

    from fra_keras import export
    from harness import perturb_batchnorm, save_run, tiny_model

    root = tmp_path_factory.mktemp("fra_export_shared")
    model = tiny_model(seed=0)
    perturb_batchnorm(model, seed=0)
    paths = save_run(model, str(root / "run"))
    inputs = keras.Input((None, None, model.config.feature_channels), name="feature_map")
    logits = keras.layers.Dense(7, name="expression_logits")(keras.layers.GlobalAveragePooling2D()(inputs))
    keras.Model(inputs, logits, name="expression_head").save(str(root / "head.keras"))
    out = root / "models"
    rc = export.main(["--model", paths["model"], "--head", str(root / "head.keras"), "--output-dir", str(out),
                      "--name", "fra", "--version", "1"])
    assert rc == 0
    return dict(paths, head=str(root / "head.keras"), out=str(out), sm=str(out / "savedmodel" / "fra" / "1"),
                onnx=str(out / "onnx" / "fra" / "1"))


@pytest.fixture(scope="session")
def tiny_export_models(tiny_export):
    """(FRA model, expression head) of `tiny_export`, loaded from their .keras files."""
    import keras

    import fra_keras.models.fra  # noqa: F401

    return (keras.saving.load_model(tiny_export["model"], compile=False),
            keras.saving.load_model(tiny_export["head"], compile=False))
