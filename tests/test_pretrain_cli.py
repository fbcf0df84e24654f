"""End-to-end tests of `python -m fra_keras.pretrain`: artefacts, resume, errors, NaN guard.

The finished run and its resumed copy are the session's shared CLI runs (`piped_cli_run`,
`resumed_cli_run` in tests/conftest.py), also read by tests/test_newcomer_pretrain.py.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from harness import PRETRAIN_SMALL

from fra_keras import pretrain
from fra_keras.config import FRAConfig

# A model small enough for a few CPU steps: the CLI flags below override the tiny preset.
SMALL = list(PRETRAIN_SMALL) + ["--verbose", "0"]


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_run(piped_cli_run):
    """A finished 3-epoch run of 3 steps (monitor, TensorBoard and checkpoints at their defaults)."""
    return str(piped_cli_run["run"])


def test_run_writes_every_artefact(finished_run):
    for name in ("config.json", "history.csv", "model.keras", "backbone.weights.h5", "summary.json",
                 "checkpoints/latest", "monitor.csv"):
        assert os.path.isfile(os.path.join(finished_run, name)), name
    assert os.path.isdir(os.path.join(finished_run, "tensorboard"))
    config = FRAConfig.from_json(os.path.join(finished_run, "config.json"))
    assert config.image_size == 64 and config.batch_size == 4 and config.epochs == 3
    rows = _history(finished_run)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for key in ("loss", "loss_global", "loss_region", "loss_cluster", "z_std", "region_entropy",
                "ema_momentum", "lr", "monitor_knn_accuracy"):
        assert np.isfinite(float(rows[-1][key])), key
    assert not any(k.startswith("val_") for k in rows[0])


def test_saved_backbone_loads_alone(finished_run):
    from fra_keras.models.backbone import load_backbone

    backbone = load_backbone(os.path.join(finished_run, "backbone.weights.h5"))
    out = backbone(np.zeros((1, 64, 64, 3), "float32"))
    assert out.shape == (1, 4, 4, 64)   # width 8 * 8 channels, stride 16 at 64 px


def test_resume_continues_from_checkpoint(finished_run, resumed_cli_run):
    state = json.load(open(os.path.join(finished_run, "checkpoints", "epoch-0003", "state.json")))
    assert state["epoch"] == 3 and state["step"] == 9                # what the resumed copy started from
    run = str(resumed_cli_run["run"])
    assert resumed_cli_run["code"] == 0
    rows = _history(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]       # two new epochs, none repeated
    state = json.load(open(os.path.join(run, "checkpoints", "epoch-0005", "state.json")))
    assert state["step"] == 15                                        # optimiser state continued (9 + 2 x 3)
    assert FRAConfig.from_json(os.path.join(run, "config.json")).epochs == 5


def test_existing_run_is_not_overwritten(finished_run, capsys):
    with pytest.raises(SystemExit) as e:
        pretrain.main(SMALL + ["--output-dir", finished_run])
    assert e.value.code == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["--backbone", "resnet9"], "backbone='resnet9'"),
    (["--batch-size", "0"], "batch_size=0"),
    (["--preset", "huge"], "preset='huge'"),
    (["--data-dir", "/nonexistent/faces"], "/nonexistent/faces"),
    (["--resume", "/nonexistent/run"], "/nonexistent/run"),
])
def test_bad_input_gives_one_line_error(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        pretrain.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_empty_data_folder_is_rejected(tmp_path, capsys):
    (tmp_path / "faces").mkdir()
    with pytest.raises(SystemExit):
        pretrain.main(["--data-dir", str(tmp_path / "faces")])
    err = capsys.readouterr().err
    assert "faces" in err and "Traceback" not in err


def test_nonfinite_loss_stops_without_saving(tmp_path, capsys):
    out = str(tmp_path / "nan")
    # An absurd learning rate with plain SGD diverges at the second step, before any checkpoint exists
    # (keeping the last good checkpoint is tested in tests/test_nonfinite_guard.py). The guard reads
    # the loss every step whatever the objective: plain BYOL (--region-losses false) builds and traces
    # the step in about half the CPU time of the region model.
    code = pretrain.main(SMALL + ["--epochs", "3", "--output-dir", out, "--optimizer", "sgd",
                                  "--learning-rate", "1e30", "--warmup-epochs", "0", "--monitor-every", "0",
                                  "--region-losses", "false"])
    assert code == 1
    assert "non-finite loss" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "model.keras"))
    assert not os.path.exists(os.path.join(out, "checkpoints", "latest"))   # no checkpoint of a NaN state


def test_cli_entry_point_is_quiet(tmp_path):
    """`python -m fra_keras.pretrain --help` prints help and no TensorFlow start-up noise."""
    proc = subprocess.run([sys.executable, "-m", "fra_keras.pretrain", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    assert "--data-dir" in proc.stdout and "--resume" in proc.stdout and "--num-regions" in proc.stdout
    assert "cuda" not in proc.stderr.lower()
