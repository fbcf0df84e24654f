"""Test-session set-up: quiet TensorFlow, two logical CPU devices, and the `slow` marker.

Two logical CPU devices are configured before any TensorFlow op runs, so that distribution tests can
build a two-replica MirroredStrategy on a CPU-only machine (docs/stack.md, "Distribution, XLA and
precision"). Single-device tests are not affected: the default strategy places everything on the first
device. Tests that need the two devices take the `two_logical_cpus` fixture, which fails (never skips)
when they could not be made, e.g. because TensorFlow was initialised before this file ran.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


def _configure_devices():
    """Split the CPU into two logical devices; returns None, or why it failed (TensorFlow's message)."""
    from fra_keras.cli_utils import quiet_tensorflow

    tf = quiet_tensorflow()
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    except RuntimeError as e:  # the runtime was initialised by an earlier import: `two_logical_cpus` fails
        return str(e)
    return None


_DEVICE_ERROR = _configure_devices()


@pytest.fixture(scope="session")
def two_logical_cpus():
    """Names of the two logical CPU devices for MirroredStrategy tests; the test fails (with the reason)
    when there are fewer."""
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.fail(f"distribution tests need two logical CPU devices, found {devices}: tests/conftest.py "
                    f"could not split the CPU ({_DEVICE_ERROR or 'no error reported'}). No TensorFlow op may "
                    "run before tests/conftest.py is imported (a plugin or sitecustomize that starts it?).",
                    pytrace=False)
    return devices[:2]


@pytest.fixture(scope="session")
def mirrored_strategy(two_logical_cpus):
    """One MirroredStrategy over the two logical CPUs for the whole session: a second strategy on the
    same devices would reuse collective instance keys and clash with the first one's all-reduces."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(two_logical_cpus)


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


# Shared pre-training runs of the CLI (tests/test_pretrain_cli.py, tests/test_newcomer_pretrain.py) ---
@pytest.fixture(scope="session")
def piped_cli_run(tmp_path_factory):
    """`python -m fra_keras.pretrain` as a user starts it, stdout to a pipe: the tiny model for 3 epochs
    of 3 steps, --log-every 2, every other flag at its default (monitor every 25 steps, TensorBoard,
    --keep-checkpoints 1), output `runs/r1` below `cwd`. Built once per session: {cwd, run, stdout,
    stderr}; tests must not modify the run folder (copy it)."""
    import subprocess
    import sys

    from harness import PRETRAIN_SMALL, subprocess_env

    cwd = tmp_path_factory.mktemp("piped")
    proc = subprocess.run([sys.executable, "-m", "fra_keras.pretrain", *PRETRAIN_SMALL, "--epochs", "3",
                           "--steps-per-epoch", "3", "--log-every", "2", "--output-dir", "runs/r1"],
                          cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return {"cwd": cwd, "run": cwd / "runs" / "r1", "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.fixture(scope="session")
def resumed_cli_run(piped_cli_run, tmp_path_factory):
    """A copy of `piped_cli_run` (3 epochs done) resumed in-process to 5 epochs with --keep-checkpoints 2
    (monitor off). {run, code}: the folder and `pretrain.main`'s exit code."""
    import shutil

    from fra_keras import pretrain

    run = tmp_path_factory.mktemp("resumed") / "copy"
    shutil.copytree(piped_cli_run["run"], run)
    code = pretrain.main(["--resume", str(run), "--epochs", "5", "--keep-checkpoints", "2", "--monitor-every", "0",
                          "--verbose", "0", "--heatmap-every", "0"])
    return {"run": run, "code": code}
