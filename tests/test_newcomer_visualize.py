"""`python -m fra_keras.visualize` checks its arguments before TensorFlow loads (issue 13, item 7)."""

import os
import subprocess
import sys

import pytest

from harness import ROOT
from test_newcomer_pretrain import assert_one_line, probe  # noqa: E402  (tests/ is on sys.path)


@pytest.mark.parametrize("argv, needle", [
    (["--model", "runs/missing/model.keras"], "--model 'runs/missing/model.keras' does not exist"),
    (["--model", "runs/x"], "must be a model.keras"),
    (["--model", "m.keras", "--images", "nowhere"], "--images 'nowhere'"),
    (["--model", "m.keras", "--num", "0"], "--num 0"),
])
def test_argument_errors_come_before_tensorflow(tmp_path, argv, needle):
    (tmp_path / "m.keras").write_bytes(b"")
    code, tf_loaded, seconds, err = probe("fra_keras.visualize", argv, tmp_path)
    assert code == 2 and not tf_loaded and seconds < 3
    assert_one_line(err, needle)


def test_unloadable_model_is_one_line(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"not a zip")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "fra_keras.visualize", "--model", "m.keras"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert_one_line(proc.stderr, "--model 'm.keras' could not be loaded")


def test_heatmap_callback_is_still_importable():
    from fra_keras.visualize import HeatmapCallback

    import keras

    assert issubclass(HeatmapCallback, keras.callbacks.Callback)
