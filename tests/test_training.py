"""The run engine `fra_keras.training`: step plans, and one tiny run through `train` with its hook.

The adapters over it are tested end to end elsewhere: tests/test_pretrain_cli.py, test_newcomer_pretrain.py
(CLI, resume, failures), tests/test_tfx_trainer.py (TFX run_fn, and the CLI trained on the same shards
giving the same numbers).
"""

import json
import os

import numpy as np
import pytest

from harness import SMALL_MODEL

from fra_keras import callbacks, training
from fra_keras.config import ConfigError, FRAConfig

TINY = dict(**SMALL_MODEL, batch_size=4, synthetic_samples=8, synthetic_size=64, epochs=1, steps_per_epoch=2,
            warmup_epochs=0)


def test_step_plan_matches_train_steps():
    paper = FRAConfig()                                    # 50 epochs, 10 of warm-up
    plan = training.plan_steps(307000, paper)
    assert (plan.epochs, plan.steps_per_epoch, plan.warmup_epochs, plan.note) == (50, 6140, 10, "")
    plan = training.plan_steps(1000, paper, steps_per_epoch=300)   # 250 divides 1000
    assert (plan.epochs, plan.steps_per_epoch, plan.total_steps, plan.warmup_epochs) == (4, 250, 1000, 1)
    plan = training.plan_steps(997, paper, steps_per_epoch=100)    # prime: rounded up, said so
    assert (plan.steps_per_epoch, plan.total_steps) == (100, 1000) and "997" in plan.note
    assert training.plan_steps(3, FRAConfig.from_preset("tiny")).total_steps == 3
    assert training.plan_steps(None, FRAConfig.from_preset("tiny")).total_steps == 6 * 25
    with pytest.raises(ConfigError, match="train_steps"):
        training.plan_steps(None, paper)
    with pytest.raises(ConfigError, match="train_steps=2.5"):
        training.plan_steps(2.5, paper)


def test_a_strategy_that_cannot_be_made_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    config = FRAConfig.from_preset("tiny", strategy="multi-worker")
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        training.train(config, str(tmp_path / "run"), steps_per_epoch=1)
    assert not os.path.exists(tmp_path / "run")          # nothing written before the strategy exists


def test_train_runs_the_hook_after_saving_and_records_its_summary(tmp_path):
    run_dir = str(tmp_path / "run")
    lines, seen = [], {}

    def after_fit(run):
        seen["files"] = sorted(os.listdir(run.write_dir))
        seen["chief"], seen["steps"] = run.chief, run.summary["steps_run"]
        return {"hook": {"value": np.float32(0.5)}}          # NumPy numbers are written as floats

    config = FRAConfig.from_preset("tiny", **TINY)
    run = training.train(config, run_dir, steps_per_epoch=2, resume=True, after_fit=after_fit, log=lines.append,
                         options=training.RunOptions(verbose=0))
    assert seen["chief"] and seen["steps"] == 2
    assert {"model.keras", "backbone.weights.h5", "config.json", "history.csv", "checkpoints"} <= set(seen["files"])
    assert "summary.json" not in seen["files"]            # written once, with the hook's entries
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary == json.loads(json.dumps(run.summary, default=float))
    assert summary["hook"] == {"value": 0.5} and (summary["epochs"], summary["steps_per_epoch"]) == (1, 2)
    with open(os.path.join(run_dir, "history.csv")) as f:
        last = f.read().strip().splitlines()[-1].split(",")
    assert float(last[0]) == summary["final"]["epoch"] == 0
    throughput = summary["throughput"]                     # 2 steps: 1 warm-up, 1 timed
    assert (throughput["warmup_steps"], throughput["timed_steps"], throughput["global_batch"]) == (1, 1, config.batch_size)
    assert throughput["samples_per_second"] > 0
    assert any(line.startswith("throughput: ") and "over the last 1 step, after 1 warm-up step" in line for line in lines)
    assert lines[0].startswith("note: ") and "no checkpoint yet" in lines[0]   # resume=True, nothing there
    assert any(line.startswith("weights digest: ") for line in lines)
    assert not os.path.exists(os.path.join(run_dir, "tensorboard"))          # tensorboard_dir=None


def test_step_counter_times_the_steps_after_the_warmup():
    """Throughput over the window from the end of step `warmup_steps` to the end of the last step,
    against the same quantity computed from the clock readings with NumPy."""
    ends = np.cumsum([5.0, 0.5, 0.25, 0.75, 0.5, 1.0])          # step 1 is slow (tracing)
    for warmup in (1, 2, 4):
        counter = callbacks.StepCounter(warmup_steps=warmup, clock=iter(ends).__next__)
        assert counter.samples_per_second(8) is None and counter.timed_steps == 0
        for step in range(len(ends)):
            counter.on_train_batch_end(step)
        expected = 8 * (len(ends) - warmup) / (ends[-1] - ends[warmup - 1])
        assert counter.count == len(ends) and counter.timed_steps == len(ends) - warmup
        np.testing.assert_allclose(counter.samples_per_second(8), expected, rtol=1e-12)
    short = callbacks.StepCounter(warmup_steps=3, clock=iter(ends).__next__)
    for step in range(3):
        short.on_train_batch_end(step)
    assert short.samples_per_second(8) is None              # no step after the warm-up


def test_throughput_warmup_is_a_tenth_of_the_steps_within_bounds():
    assert [training.throughput_warmup(n) for n in (0, 1, 9, 10, 25, 499, 500, 10_000)] == [1, 1, 1, 1, 2, 49, 50, 50]
