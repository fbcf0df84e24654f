"""Crash safety of `python -m fra_keras.pretrain` (issue 13, item 13): a real process is SIGKILLed in
the middle of an epoch after a checkpoint exists, then resumed with --resume.

Two real pre-training processes (killed, resumed). An uninterrupted run ends with
epochs x steps_per_epoch optimizer steps and a checkpoint whose state says so (tests/test_pretrain_cli.py
and the assertions below): the resumed run must end with exactly that count.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS, STEPS = 3, 12
FLAGS = ["--image-size", "64", "--backbone-width", "8", "--hidden-dim", "32", "--proj-dim", "16",
         "--decoder-dim", "16", "--decoder-ffn-dim", "16", "--decoder-heads", "2", "--batch-size", "4",
         "--synthetic-samples", "8", "--synthetic-size", "64", "--warmup-epochs", "1", "--heatmap-every", "0",
         "--no-tensorboard", "--monitor-every", "0", "--epochs", str(EPOCHS), "--steps-per-epoch", str(STEPS)]


def _start(run_dir, log, *extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "fra_keras.pretrain", *extra, "--output-dir", str(run_dir)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _latest(run_dir):
    """The epoch number named by checkpoints/latest, or 0."""
    try:
        with open(os.path.join(run_dir, "checkpoints", "latest")) as f:
            return int(f.read().strip().split("-")[1])
    except (OSError, IndexError, ValueError):
        return 0


def _wait_for_checkpoint(proc, run_dir, epoch, timeout=300):
    """Seconds until `latest` names `epoch` (polling every 20 ms)."""
    start = time.time()
    while _latest(run_dir) < epoch:
        assert proc.poll() is None, "the run ended before the checkpoint"
        assert time.time() - start < timeout
        time.sleep(0.02)
    return time.time()


def _state(run_dir, epoch):
    with open(os.path.join(run_dir, "checkpoints", f"epoch-{epoch:04d}", "state.json")) as f:
        return json.load(f)


def _history_epochs(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    # 1. Killed inside the second epoch: after the first epoch's checkpoint is complete, the time of
    #    one more checkpoint's worth of steps is unknown, so kill soon after the first one (a step of
    #    this model takes ~0.1-0.3 s: 12 steps per epoch leave the kill inside epoch 2 or 3).
    run = tmp_path / "crashed"
    with open(tmp_path / "crashed.log", "w") as log:
        proc = _start(run, log, *FLAGS, "--verbose", "2")
        _wait_for_checkpoint(proc, run, 1)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    done = _latest(run)
    assert 1 <= done < EPOCHS, "the kill did not land inside the run"
    assert not os.path.exists(run / "model.keras")
    state = _state(run, done)
    assert state["epoch"] == done and state["step"] == done * STEPS

    # 3. Resume: continues from the last complete checkpoint and loses only the killed epoch.
    with open(tmp_path / "resumed.log", "w") as log:
        proc = _start(run, log, "--resume", str(run), "--verbose", "2")
        assert proc.wait(timeout=600) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    out = (tmp_path / "resumed.log").read_text()
    assert f"resumed from {run}/checkpoints/epoch-{done:04d} (epoch {done}, step {done * STEPS})" in out
    assert sum(1 for line in out.splitlines() if line.startswith("Epoch ")) == EPOCHS - done
    assert _history_epochs(run) == list(range(EPOCHS))            # every epoch once, none repeated
    final = _state(run, EPOCHS)
    assert final["step"] == EPOCHS * STEPS                        # same optimiser steps as uninterrupted
    assert os.path.isfile(run / "model.keras") and os.path.isfile(run / "backbone.weights.h5")
    assert not [n for n in os.listdir(run / "checkpoints") if n.startswith(".tmp-")]
