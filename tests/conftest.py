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
