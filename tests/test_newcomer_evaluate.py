"""`python -m fra_keras.evaluate` CLI layer (issue 13, items 4, 7 and 8): a default report location,
one line per epoch when piped, metric directions, and layout errors before TensorFlow."""

import glob
import json
import os
import subprocess
import sys

import pytest

from test_newcomer_pretrain import assert_one_line, probe  # noqa: E402  (tests/ is on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """An evaluation without --output, stdout to a pipe."""
    cwd = tmp_path_factory.mktemp("evaluate")
    proc = subprocess.run([sys.executable, "-m", "fra_keras.evaluate", "expression", "--model", "random",
                           "--backbone-width", "8", "--image-size", "64", "--train-samples", "16",
                           "--test-samples", "8", "--epochs", "2", "--batch-size", "8"],
                          cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return cwd, proc.stdout


def test_without_output_the_report_and_head_are_kept(default_run):
    cwd, out = default_run
    reports = glob.glob(str(cwd / "reports" / "expression-*" / "report.json"))
    assert len(reports) == 1
    folder = os.path.dirname(reports[0])
    assert os.path.isfile(os.path.join(folder, "head.keras"))
    with open(reports[0]) as f:
        report = json.load(f)
    assert report["task"] == "expression" and report["artifacts"]["head"] == os.path.join(
        os.path.relpath(folder, cwd), "head.keras")
    assert f"report: {os.path.relpath(reports[0], cwd)}" in out
    assert f"head: {os.path.relpath(folder, cwd)}/head.keras" in out


def test_piped_progress_is_one_line_per_epoch_with_metric_directions(default_run):
    _, out = default_run
    assert "\r" not in out and "\x08" not in out
    assert sum(1 for line in out.splitlines() if line.startswith("Epoch ")) == 2
    assert "synthetic_top1_accuracy: " in out and "(higher is better; baseline " in out


def test_metric_directions():
    from fra_keras.downstream.tasks import metric_direction

    assert metric_direction("wflw_nme") == "lower"
    assert metric_direction("synthetic_failure_rate_10") == "lower"
    for name in ("rafdb_top1_accuracy", "celeba_attribute_accuracy", "synthetic_region_purity",
                 "synthetic_knn_mean_class_accuracy"):
        assert metric_direction(name) == "higher"


def test_wrong_data_layout_is_reported_before_tensorflow(tmp_path):
    (tmp_path / "raf").mkdir()
    code, tf_loaded, seconds, err = probe("fra_keras.evaluate", ["expression", "--model", "random", "--data",
                                                                 "rafdb:raf"], tmp_path)
    assert code == 2 and not tf_loaded and seconds < 3
    assert_one_line(err, "not in the rafdb layout", "list_patition_label.txt")


@pytest.mark.parametrize("argv, needle", [
    (["--output", "out"], "--output 'out' is a folder"),
    (["--save-dir", "f.txt"], "--save-dir: 'f.txt' is an existing file"),
])
def test_output_paths_of_the_wrong_kind(tmp_path, argv, needle):
    (tmp_path / "out").mkdir()
    (tmp_path / "f.txt").write_text("x")
    code, tf_loaded, _, err = probe("fra_keras.evaluate", ["expression", "--model", "random", *argv], tmp_path)
    assert code == 2 and not tf_loaded
    assert_one_line(err, needle)
