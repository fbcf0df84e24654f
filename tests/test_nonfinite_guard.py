"""The non-finite-loss guard keeps the last good checkpoint (the CLI test diverges before the first one)."""

from __future__ import annotations

import json
import os

import keras
import numpy as np

from fra_keras import callbacks


def batches(good_steps):
    """(x, y) batches of a linear problem; every batch after `good_steps` has a NaN input."""
    rng = np.random.default_rng(0)
    step = 0
    while True:
        x = rng.normal(size=(4, 3)).astype(np.float32)
        if step >= good_steps:
            x[0, 0] = np.nan
        yield x, x.sum(axis=1, keepdims=True)
        step += 1


def test_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    guard = callbacks.NonFiniteLossGuard()
    directory = str(tmp_path / "checkpoints")
    saver = callbacks.AtomicCheckpoint(directory, guard=guard, keep=3)
    # Two finite epochs of 2 steps, then NaN in the second step of epoch 3.
    model.fit(batches(good_steps=5), steps_per_epoch=2, epochs=5, callbacks=[guard, saver], verbose=0,
              shuffle=False)
    assert guard.failure is not None and "non-finite loss" in guard.failure
    assert int(model.optimizer.iterations.numpy()) == 6          # stopped in epoch 3, not later
    assert sorted(os.listdir(directory)) == ["epoch-0001", "epoch-0002", "latest"]
    assert open(os.path.join(directory, "latest")).read().strip() == "epoch-0002"
    state = json.load(open(os.path.join(directory, "epoch-0002", "state.json")))
    assert state["epoch"] == 2 and all(np.isfinite(v) for v in state["logs"].values())
