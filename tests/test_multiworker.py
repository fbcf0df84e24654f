"""Multi-worker training: two `python -m fra_keras.pretrain --strategy multi-worker` processes on
127.0.0.1 (TF_CONFIG, free ports) train a tiny model together with MultiWorkerMirroredStrategy.

Checks: both exit 0, both print the same weights digest (they stayed in sync), the chief (worker 0; the
cluster has no "chief" task) wrote every artefact to its --output-dir, and worker 1 wrote nothing to
its own --output-dir (its files went to a temporary folder that was deleted). Bounded: the workers are
killed after TIMEOUT seconds or when the test fails. The chief / temporary-folder rules themselves are
unit-tested below without processes.

The region monitor is off in the two processes (`--monitor-every 0`): it renders 384 held-out faces and
runs its checks in each worker, about a quarter of each worker's CPU time, and what a run does with it
on a non-chief worker (its monitor.csv and TensorBoard events go to the temporary folder) is checked
below without processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from fra_keras import distributed

TIMEOUT = 300  # seconds for both workers together (60-120 s on 2 shared cores; more under heavy load)

SMALL = ["--image-size", "64", "--backbone-width", "8", "--hidden-dim", "32", "--proj-dim", "16",
         "--decoder-dim", "16", "--decoder-ffn-dim", "16", "--decoder-heads", "2", "--batch-size", "4",
         "--synthetic-samples", "8", "--synthetic-size", "64", "--steps-per-epoch", "2",
         "--warmup-epochs", "1", "--verbose", "0", "--heatmap-every", "0", "--monitor-every", "0"]


def _free_ports(n):
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _kill(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def test_two_workers_stay_in_sync_and_only_the_chief_writes(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    outs = [tmp_path / f"worker{i}" for i in range(2)]
    procs, logs = [], []
    try:
        for i in range(2):
            env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3",
                       TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
            log = open(tmp_path / f"worker{i}.log", "w+")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "fra_keras.pretrain", "--strategy", "multi-worker", *SMALL,
                 "--epochs", "2", "--output-dir", str(outs[i])],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        deadline = time.time() + TIMEOUT
        while time.time() < deadline and any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break       # one worker failed: the other would wait for it forever
            time.sleep(1)
        texts = []
        for log in logs:
            log.seek(0)
            texts.append(log.read())
        codes = [p.poll() for p in procs]
        assert codes == [0, 0], f"exit codes {codes} (None: still running after {TIMEOUT}s)\n" + "\n".join(
            f"--- worker {i} ---\n{t[-3000:]}" for i, t in enumerate(texts))
    finally:
        for p in procs:
            _kill(p)
        for log in logs:
            log.close()

    digests = [re.findall(r"weights digest: ([0-9a-f]+)", t) for t in texts]
    assert all(len(d) == 1 for d in digests), texts
    assert digests[0] == digests[1], f"workers ended with different weights: {digests}"
    assert "2 replica(s)" in texts[0] and "2 replica(s)" in texts[1]

    chief = outs[0]
    for name in ("config.json", "history.csv", "model.keras", "backbone.weights.h5", "summary.json",
                 "checkpoints/latest", "checkpoints/epoch-0002/model.weights.h5"):
        assert (chief / name).is_file(), name
    with open(chief / "checkpoints" / "epoch-0002" / "state.json") as f:
        assert json.load(f)["step"] == 4
    written = [str(p) for p in outs[1].rglob("*")] if outs[1].exists() else []
    assert written == [], f"the non-chief worker wrote {written}"


# The chief rule and the temporary folder, without processes --------------------------------------
@pytest.mark.parametrize("config, chief", [
    ({}, True),                                                                     # no TF_CONFIG
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False),
    ({"cluster": {"chief": ["c:1"], "evaluator": ["e:1"]}, "task": {"type": "evaluator", "index": 0}}, False),
])
def test_is_chief(config, chief):
    assert distributed.is_chief(config) is chief


def test_chief_output_dir_and_auto_strategy(tmp_path, monkeypatch):
    with distributed.chief_output_dir(str(tmp_path / "run"), chief=True) as d:
        assert d == str(tmp_path / "run")
    with distributed.chief_output_dir(str(tmp_path / "run"), chief=False) as d:
        assert d != str(tmp_path / "run")
        open(os.path.join(d, "x"), "w").close()
    assert not os.path.exists(d)                               # the worker's folder is deleted
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert distributed.resolve_strategy_name("auto") == "multi-worker"
    assert not distributed.is_chief()
    monkeypatch.setenv("TF_CONFIG", "")
    assert distributed.resolve_strategy_name("auto") == "default"      # CPU only, one task
    with pytest.raises(ValueError, match="strategy='warp'"):
        distributed.resolve_strategy_name("warp")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distributed.make_strategy("multi-worker")


def test_non_chief_callbacks_write_only_to_the_temporary_folder(tmp_path):
    """Every file a non-chief worker's callbacks would write (history, checkpoints, TensorBoard, region
    monitor and heatmap pictures, all on) lies below its temporary folder, none in the run folder."""
    from harness import tiny_config

    from fra_keras import callbacks, training

    run_dir, write_dir = str(tmp_path / "run"), str(tmp_path / "worker-tmp")
    run = training.Run(tiny_config(), None, None, run_dir, write_dir, os.path.join(write_dir, "tensorboard"))
    assert not run.chief
    options = training.RunOptions(tensorboard_dir=os.path.join(run_dir, "tensorboard"), monitor_every=5,
                                  heatmap_every=1)
    cbs = training._callbacks(run, options, callbacks.NonFiniteLossGuard(), callbacks.StepCounter(), 0, False)
    paths = {f"{type(cb).__name__}.{k}": v for cb in cbs for k, v in vars(cb).items()
             if isinstance(v, str) and os.path.isabs(v)}
    kinds = {name.split(".")[0] for name in paths}
    assert {"RegionMonitor", "HistoryCSV", "AtomicCheckpoint", "StepTensorBoard", "HeatmapCallback"} <= kinds, paths
    outside = {k: v for k, v in paths.items() if not v.startswith(write_dir + os.sep)}
    assert not outside, f"a non-chief callback writes outside its temporary folder: {outside}"
