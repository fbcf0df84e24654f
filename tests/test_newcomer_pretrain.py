"""`python -m fra_keras.pretrain` usability (issue 13): early one-line errors (items 5, 6, 7), progress
output to files (item 8), TensorBoard step scalars (item 9) and --keep-checkpoints (item 10)."""

import glob
import os
import subprocess
import sys

import pytest
from harness import PRETRAIN_SMALL, subprocess_env

# A model small enough for a few CPU steps (the tiny preset, narrowed).
SMALL = list(PRETRAIN_SMALL)

# Calls main(argv) in a fresh interpreter; prints whether TensorFlow was imported when it exited.
PROBE = """
import sys, time, importlib
module = importlib.import_module(sys.argv[1])
start = time.time()
try:
    code = module.main(sys.argv[2:])
except SystemExit as e:
    code = e.code
print(f"exit={code} tensorflow={'tensorflow' in sys.modules} seconds={time.time() - start:.2f}")
"""


def _env():
    return subprocess_env()


def probe(module, argv, cwd):
    """(exit code, tensorflow imported?, seconds, stderr) of module.main(argv) in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", PROBE, module, *argv], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300)
    fields = dict(f.split("=") for f in proc.stdout.strip().splitlines()[-1].split())
    return int(fields["exit"]), fields["tensorflow"] == "True", float(fields["seconds"]), proc.stderr


def assert_one_line(stderr, *needles):
    err = stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, stderr
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.mark.parametrize("setup, argv, needles", [
    ("empty_dir", ["--data-dir", "faces"], ["'faces'", "no .jpg"]),
    (None, ["--data-dir", "missing"], ["'missing'", "does not exist"]),
    ("file", ["--data-dir", "f.txt"], ["'f.txt'", "is a file"]),
    ("file", ["--output-dir", "f.txt"], ["--output-dir 'f.txt'", "existing file"]),
    ("file", ["--output-dir", "f.txt/run"], ["--output-dir 'f.txt/run'", "existing file"]),
    (None, ["--keep-checkpoints", "0"], ["--keep-checkpoints 0", ">= 1"]),
    (None, ["--log-every", "-1"], ["--log-every -1", ">= 0"]),
])
def test_mistakes_are_reported_before_tensorflow(tmp_path, setup, argv, needles):
    if setup == "empty_dir":
        (tmp_path / "faces" / "sub").mkdir(parents=True)
        (tmp_path / "faces" / "sub" / "notes.txt").write_text("no images here")
    elif setup == "file":
        (tmp_path / "f.txt").write_text("a file")
    code, tf_loaded, seconds, err = probe("fra_keras.pretrain", argv, tmp_path)
    assert code == 2
    assert not tf_loaded and seconds < 3
    assert_one_line(err, *needles)
    assert not os.path.exists(tmp_path / "runs")


def test_folder_of_corrupt_images_is_rejected(tmp_path):
    """Training on nothing stops with one line naming the folder and how many files failed."""
    faces = tmp_path / "faces" / "id1"
    faces.mkdir(parents=True)
    for i in range(5):
        (faces / f"{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg " + bytes([i]))
    (faces / "5.png").write_bytes(b"\x89PNG broken")
    proc = subprocess.run([sys.executable, "-m", "fra_keras.pretrain", "--data-dir", "faces", *SMALL,
                           "--output-dir", "run"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_line(proc.stderr, "'faces'", "all 6 image files failed to decode")
    assert not os.path.exists(tmp_path / "run" / "model.keras")


def test_verbosity_follows_the_terminal():
    from fra_keras.pretrain import progress_verbosity

    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    assert progress_verbosity(None, Stream(True)) == 1
    assert progress_verbosity(None, Stream(False)) == 2
    assert progress_verbosity(0, Stream(True)) == 0 and progress_verbosity(1, Stream(False)) == 1


def _scalars(folder):
    """{tag: [(step, value)]} of every event file below `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True):
        acc = EventAccumulator(events, size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("tensors", []):
            out.setdefault(tag, []).extend((e.step, float(e.tensor_proto.float_val[0]) if e.tensor_proto.float_val
                                            else None) for e in acc.Tensors(tag))
    return out


@pytest.fixture(scope="module")
def piped_run(piped_cli_run):
    """A 3-epoch run with stdout to a pipe, --log-every 2 and the default --keep-checkpoints (the
    session's `piped_cli_run`, tests/conftest.py)."""
    return piped_cli_run


def test_piped_output_has_one_line_per_epoch_and_what_next(piped_run):
    out = piped_run["stdout"]
    assert "\r" not in out and "\x08" not in out
    assert [line.split()[0] for line in out.splitlines() if line.startswith("Epoch ")] == ["Epoch"] * 3
    assert sum(1 for line in out.splitlines() if "loss:" in line and "step" in line) == 3
    assert "next:" in out
    for command in ("python -m fra_keras.export --model runs/r1/model.keras",
                    "python -m fra_keras.evaluate expression --model runs/r1/model.keras",
                    "tensorboard --logdir runs/r1/tensorboard"):
        assert command in out, out[-1500:]
    assert os.path.isfile(piped_run["run"] / "model.keras")


def test_only_the_newest_checkpoint_is_kept_by_default(piped_run):
    checkpoints = piped_run["run"] / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["epoch-0003", "latest"]


def test_tensorboard_has_step_scalars_and_one_learning_rate_tag(piped_run):
    scalars = _scalars(str(piped_run["run"] / "tensorboard"))
    # 3 epochs x 3 steps = optimiser steps 1..9; every 2nd step is logged, numbered by the step.
    assert [step for step, _ in sorted(scalars["batch_loss"])] == [2, 4, 6, 8]
    assert [step for step, _ in sorted(scalars["epoch_loss"])] == [0, 1, 2]
    lr_tags = sorted(t for t in scalars if "lr" in t or "learning_rate" in t)
    assert lr_tags == ["batch_lr", "epoch_lr"]


def test_keep_checkpoints_keeps_the_newest_n(resumed_cli_run):
    """--keep-checkpoints 2 on a run resumed from epoch 3 to 5 (`resumed_cli_run`, tests/conftest.py):
    epoch 3's checkpoint, written by the earlier process, is deleted once epoch 5's is complete."""
    out = str(resumed_cli_run["run"])
    assert resumed_cli_run["code"] == 0
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["epoch-0004", "epoch-0005", "latest"]
    assert open(os.path.join(out, "checkpoints", "latest")).read().strip() == "epoch-0005"


def test_stale_temporary_checkpoint_of_a_killed_process_is_removed(tmp_path):
    from fra_keras.callbacks import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".tmp-epoch-0002-{dead}").mkdir()
    (tmp_path / f".tmp-epoch-0002-{os.getpid()}").mkdir()
    (tmp_path / "epoch-0001").mkdir()
    remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [f".tmp-epoch-0002-{os.getpid()}", "epoch-0001"]


def test_training_that_runs_out_of_input_fails(tmp_path, monkeypatch, capsys):
    """If the input ends before the planned steps (Keras only warns), the run fails with one line.
    Plain BYOL (--region-losses false): the step count does not depend on the objective, and its step
    traces in about half the CPU time of the region model's."""
    from fra_keras import data as fra_data
    from fra_keras import pretrain

    real = fra_data.pretraining_dataset
    monkeypatch.setattr(fra_data, "pretraining_dataset", lambda config, **kw: real(config, **kw).take(3))
    out = str(tmp_path / "run")
    code = pretrain.main(SMALL + ["--epochs", "2", "--no-tensorboard", "--monitor-every", "0", "--verbose", "0",
                                  "--region-losses", "false", "--output-dir", out])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: training ran out of input after 3 of 4 optimiser steps"), err
    assert not os.path.exists(os.path.join(out, "model.keras"))


def test_folders_cli_checks_the_folder_before_tensorflow(tmp_path):
    """`python -m fra_keras.data.folders` (the scan the error messages point to) answers a missing
    folder at once, and its scan prints no TensorFlow start-up lines."""
    code, tf_loaded, seconds, err = probe("fra_keras.data.folders", ["missing"], tmp_path)
    assert code == 2 and not tf_loaded and seconds < 3
    assert_one_line(err, "data_dir='missing' does not exist")
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "a.jpg").write_bytes(b"not a jpeg")
    proc = subprocess.run([sys.executable, "-m", "fra_keras.data.folders", "faces"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "1 image files, 0 decodable, 1 skipped" in proc.stdout
    assert proc.stderr == "", proc.stderr
