"""The run engine: one FRA pre-training run, from a resolved `FRAConfig` to a finished run folder.

`python -m fra_keras.pretrain` (flags -> config) and the TFX Trainer module `export/tfx_trainer.py`
(`fn_args` -> config) are thin adapters over `train`; whatever they add (the CLI's messages, TFX's
evaluation and serving export) happens before it, or in its `after_fit` hook. `train` does, in order:

1. the strategy, `distributed.make_strategy(config.strategy)`, before TensorFlow runs any op (a
   MultiWorkerMirroredStrategy must come first);
2. the write folder: `run_dir` on the chief, a temporary folder deleted at the end on other workers
   (`distributed.chief_output_dir`: every worker runs the same saving code, only the chief's files stay);
3. `config.json`, the seed (`keras.utils.set_random_seed(config.seed)`), `FRA` and its optimiser built
   in the strategy's scope;
4. with `resume`, the newest checkpoint of `run_dir/checkpoints` restored (`callbacks.latest_checkpoint`);
5. the input, `data.pretraining_dataset(config, **data)`, one pipeline per worker under multi-worker;
6. `fit` with the callbacks: non-finite-loss guard, step counter, region monitor, `history.csv`, atomic
   checkpoints, TensorBoard (per-step scalars) and heatmap pictures;
7. failures raised: `callbacks.NonFiniteLossError` (NaN / Inf loss; the last good checkpoint is kept),
   `InputExhaustedError` (the input ended before the planned steps); no model is saved then;
8. `model.keras` and `backbone.weights.h5`, the `after_fit(run)` hook, `summary.json`, and the weights
   digest (every worker prints it: they must agree).

This module imports neither TensorFlow nor Keras at load time (the CLI answers mistakes before they load).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Dict, Optional

from fra_keras.config import ConfigError, FRAConfig, atomic_write_text


class InputExhaustedError(RuntimeError):
    """The input ended before the planned optimiser steps (Keras only warns); no model was saved."""


@dataclasses.dataclass
class RunOptions:
    """How a run saves and logs (the hyper-parameters are the `FRAConfig`'s)."""
    checkpoint_every: int = 1             # epochs between checkpoints (the last epoch is always saved)
    keep_checkpoints: int = 1             # newest checkpoint folders kept
    tensorboard_dir: Optional[str] = None  # the chief's TensorBoard folder; None: no TensorBoard
    log_every: int = 10                   # per-step scalars every N optimiser steps (0: per epoch only)
    monitor_every: int = 0                # region-health monitor every N steps (0: off)
    heatmap_every: int = 0                # heatmap pictures every N epochs (0: never; needs TensorBoard)
    verbose: int = 2                      # Keras progress: 0 silent, 1 bar, 2 a line per epoch


@dataclasses.dataclass
class Run:
    """What `train` built and wrote; handed to `after_fit` and returned."""
    config: FRAConfig
    model: Any
    strategy: Any
    run_dir: str                          # the run folder (checkpoints are read from here)
    write_dir: str                        # where this process writes: run_dir on the chief
    tensorboard_dir: Optional[str]        # this process's TensorBoard folder
    summary: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def chief(self) -> bool:
        """Whether this process writes the run folder (`distributed.is_chief`)."""
        return self.write_dir == self.run_dir


def train(config: FRAConfig, run_dir: str, *, steps_per_epoch: int, resume: bool = False,
          options: Optional[RunOptions] = None, data: Optional[dict] = None, source: Optional[str] = None,
          after_fit: Optional[Callable[[Run], Optional[dict]]] = None, log: Callable[[str], Any] = print) -> Run:
    """Pre-train FRA for `config.epochs` x `steps_per_epoch` steps into `run_dir` (module docstring).

    Args:
      config: the resolved configuration (written to `run_dir/config.json`).
      run_dir: the run folder; with `resume` its newest checkpoint is restored first.
      steps_per_epoch: optimiser steps per epoch (the schedules span `config.epochs` of them).
      options: checkpoints, TensorBoard, monitor, heatmaps, verbosity (`RunOptions`).
      data: keyword arguments of `data.pretraining_dataset` (e.g. `data_dir`, `image_key`,
        `shuffle_buffer`); None: the config's source.
      source: the data source in words, for the log (default: the data folder, or synthetic faces).
      after_fit: called with the `Run` once the model files are saved (every worker, inside the write
        folder's lifetime); the dict it returns is added to the summary.
      log: where the progress lines go (`print`, or a logger's `info`).
    Returns the `Run` (its `summary` as written to `summary.json`). Raises `ConfigError` (the strategy
    cannot be made), `callbacks.NonFiniteLossError`, `InputExhaustedError`.
    """
    from fra_keras import distributed

    try:  # before anything else runs a TensorFlow op
        strategy = distributed.make_strategy(config.strategy)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    options = options or RunOptions()
    data = dict(data or {})
    with distributed.chief_output_dir(run_dir) as write_dir:
        tensorboard_dir = options.tensorboard_dir
        if tensorboard_dir is not None and write_dir != run_dir:
            tensorboard_dir = os.path.join(write_dir, "tensorboard")
        run = Run(config, None, strategy, run_dir, write_dir, tensorboard_dir)
        return _train(run, steps_per_epoch, resume, options, data, source, after_fit, log)


def _train(run: Run, steps_per_epoch, resume, options, data, source, after_fit, log) -> Run:
    import keras

    from fra_keras import callbacks as fra_callbacks
    from fra_keras import distributed
    from fra_keras.models.fra import FRA

    config, strategy, write_dir = run.config, run.strategy, run.write_dir
    os.makedirs(write_dir, exist_ok=True)
    config.to_json(os.path.join(write_dir, "config.json"))
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = run.model = FRA(config)
        model.compile(steps_per_epoch=steps_per_epoch)
    initial_epoch = _resume(model, os.path.join(run.run_dir, "checkpoints"), log) if resume else 0
    if initial_epoch >= config.epochs:
        log(f"nothing to do: {initial_epoch} of {config.epochs} epochs already done")
    _describe(run, steps_per_epoch, source or data.get("data_dir") or config.data_dir, log)
    dataset = _dataset(config, strategy, data)
    expected = max(config.epochs - initial_epoch, 0) * steps_per_epoch
    guard, steps = fra_callbacks.NonFiniteLossGuard(), fra_callbacks.StepCounter(throughput_warmup(expected))
    cbs = _callbacks(run, options, guard, steps, initial_epoch, append=resume)
    start = time.time()
    if initial_epoch < config.epochs:
        model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps_per_epoch, initial_epoch=initial_epoch,
                  callbacks=cbs, verbose=options.verbose, shuffle=False)   # datasets shuffle themselves
    if guard.failure:
        raise fra_callbacks.NonFiniteLossError(guard.failure)
    if steps.count < expected:
        raise InputExhaustedError(ran_out_message(config, steps.count, expected, data.get("data_dir")))
    fra_callbacks.save_model_files(model, write_dir)
    run.summary = {"seconds": round(time.time() - start, 1), "epochs": config.epochs,
                   "steps_per_epoch": steps_per_epoch, "steps_run": int(model.optimizer.iterations.numpy()),
                   "final": last_history_row(write_dir)}
    rate = steps.samples_per_second(config.batch_size)
    if rate is not None:
        run.summary["throughput"] = {"samples_per_second": round(rate, 2), "timed_steps": steps.timed_steps,
                                     "warmup_steps": steps.warmup_steps, "global_batch": config.batch_size}
        log(f"throughput: {rate:.1f} samples/s (view pairs; global batch {config.batch_size}) over the last "
            f"{_count(steps.timed_steps, 'step')}, after {_count(steps.warmup_steps, 'warm-up step')}")
    if after_fit is not None:
        run.summary.update(after_fit(run) or {})
    write_json(os.path.join(write_dir, "summary.json"), run.summary)
    # Every worker prints the digest of its final weights: they must agree in a multi-worker run.
    log(f"weights digest: {distributed.weights_digest(model)}")
    where = (f"{run.run_dir}/model.keras, {run.run_dir}/backbone.weights.h5" if run.chief
             else "this worker's copies are discarded, the chief writes the run folder")
    log(f"done in {run.summary['seconds']:.0f}s: {where}")
    return run


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def throughput_warmup(steps: int) -> int:
    """Steps left out of the throughput timing of a run of `steps` steps: the first tenth, at least 1
    (tracing, XLA compilation, the input pipeline's first buffers) and at most 50."""
    return min(max(steps // 10, 1), 50)


def _resume(model, checkpoints: str, log) -> int:
    """Restore the newest checkpoint of `checkpoints` into `model`; the epochs it completed (0: none)."""
    from fra_keras import callbacks as fra_callbacks

    folder, state = fra_callbacks.latest_checkpoint(checkpoints)
    if folder is None:
        log(f"note: {checkpoints} has no checkpoint yet; starting from scratch")
        return 0
    fra_callbacks.restore_checkpoint(model, folder)
    log(f"resumed from {folder} (epoch {int(state['epoch'])}, step {state['step']})")
    return int(state["epoch"])


def _describe(run: Run, steps_per_epoch: int, source, log):
    from fra_keras import distributed
    from fra_keras.data.device_augment import resolve_augment_on_device

    config, model = run.config, run.model
    n_params = sum(int(v.shape.num_elements()) for v in model.optimized_variables)
    log(f"FRA {config.preset}: {config.backbone} (width {config.backbone_width}, stride {config.output_stride}), "
        f"{config.image_size}px -> {config.feature_grid}x{config.feature_grid} grid, K={config.num_regions}, "
        f"{n_params / 1e6:.2f}M trainable params")
    log(f"data: {source or 'synthetic faces'}; global batch {config.batch_size}, {steps_per_epoch} steps x "
        f"{config.epochs} epochs; {distributed.describe(run.strategy)}, "
        f"{config.precision}, XLA {'on' if model.jit_compile else 'off'}, augmentation on "
        f"{'the accelerator' if resolve_augment_on_device(config.augment_on_device) else 'CPU'}")
    log(f"output: {run.run_dir}" + ("" if run.chief else
                                    " (written by the chief; this worker's files go to a temporary folder)"))


def _dataset(config: FRAConfig, strategy, data: dict):
    """`data.pretraining_dataset(config, **data)`; under multi-worker one input pipeline per worker, each
    reading its own share of the source and producing per-replica batches (instead of every worker
    building every global batch and dropping the other workers' part, tf.data's DATA auto-sharding)."""
    from fra_keras import data as fra_data
    from fra_keras import distributed

    if distributed.in_multi_worker_mode(strategy):
        return strategy.distribute_datasets_from_function(
            lambda context: fra_data.pretraining_dataset(config, input_context=context, **data))
    return fra_data.pretraining_dataset(config, **data)


def _callbacks(run: Run, options: RunOptions, guard, steps, initial_epoch: int, append: bool) -> list:
    """The callbacks of `fit`, in the order they must run."""
    from fra_keras import callbacks as fra_callbacks

    write_dir, tensorboard_dir = run.write_dir, run.tensorboard_dir
    monitor = []
    if options.monitor_every:
        from fra_keras.monitor import RegionMonitor

        monitor = [RegionMonitor(run.config, every_steps=options.monitor_every, seed=run.config.seed,
                                 csv_path=os.path.join(write_dir, "monitor.csv"), log_dir=tensorboard_dir)]
    history = fra_callbacks.HistoryCSV(os.path.join(write_dir, "history.csv"), append=append)
    history.initial_epoch = initial_epoch
    # The monitor comes before HistoryCSV: it adds its latest values to each epoch's logs. The history
    # row is written before the checkpoint: a crash between the two leaves a row for an epoch that will
    # be re-run (dropped on resume), never a checkpoint whose epoch has no row.
    cbs = [guard, steps, *monitor, history,
           fra_callbacks.AtomicCheckpoint(os.path.join(write_dir, "checkpoints"), every_epochs=options.checkpoint_every,
                                          keep=options.keep_checkpoints, guard=guard, chief_only=False)]
    if tensorboard_dir is not None:
        cbs.append(fra_callbacks.StepTensorBoard(tensorboard_dir, log_every=options.log_every))
        if options.heatmap_every and run.config.region_losses:
            try:
                from fra_keras.visualize import HeatmapCallback
            except ImportError:
                HeatmapCallback = None
            if HeatmapCallback is not None:
                cbs.append(HeatmapCallback(tensorboard_dir, run.config, every_epochs=options.heatmap_every))
    return cbs


def ran_out_message(config: FRAConfig, done: int, expected: int, data_dir=None) -> str:
    """Why training stopped early: the input ended (for a folder: how many files cannot be decoded)."""
    data_dir = data_dir or config.data_dir
    text = f"training ran out of input after {done} of {expected} optimiser steps"
    if isinstance(data_dir, str) and "://" not in data_dir:
        from fra_keras.data.shard import has_shards

        if not has_shards(data_dir):
            from fra_keras.data.folders import check_images, list_images

            paths = list_images(data_dir)
            good, bad = check_images(paths)
            text += (f": --data-dir {data_dir!r} has {len(bad)} of {len(paths)} image files that cannot "
                     f"be decoded ({len(good)} usable, batch size {config.batch_size})")
            return text + "; no model was saved"
    return text + f" (data: {data_dir or 'synthetic faces'}); no model was saved"


def last_history_row(run_dir: str) -> dict:
    """The last row of `run_dir/history.csv` as floats ({} when there is none)."""
    import csv

    path = os.path.join(run_dir, "history.csv")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", "NA")} if rows else {}


def write_json(path: str, value: dict):
    """`value` as indented JSON, written atomically (numbers that JSON lacks, e.g. NumPy's, as floats)."""
    atomic_write_text(path, json.dumps(value, indent=2, default=_json_default) + "\n")


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


# Step plans ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class StepPlan:
    epochs: int
    steps_per_epoch: int
    warmup_epochs: int
    note: str = ""

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def plan_steps(train_steps: Optional[int], config: FRAConfig, steps_per_epoch: Optional[int] = None) -> StepPlan:
    """Epochs x steps per epoch for a budget of `train_steps` optimiser steps.

    The warm-up / cosine learning-rate schedule and the EMA schedule span exactly the training, so
    `train_steps` is split into E epochs of S steps with E * S == train_steps: S is the largest divisor of
    `train_steps` not above the wanted steps per epoch (`steps_per_epoch`, else `config.steps_per_epoch`,
    else train_steps / config.epochs) if that divisor is at least half of it; otherwise S is the wanted
    value and the training is rounded up to the next multiple (said in `note`). `warmup_epochs` keeps
    its share of the training (paper: 10 of 50 epochs). Without `train_steps`: config.epochs x S.
    """
    wanted = steps_per_epoch or config.steps_per_epoch
    if not train_steps:
        if not wanted:
            raise ConfigError("train_steps (TrainArgs.num_steps) is not set and steps_per_epoch is unknown: set "
                              "one of them (custom_config['steps_per_epoch'] or FRAConfig.steps_per_epoch)")
        return StepPlan(config.epochs, int(wanted), config.warmup_epochs)
    if isinstance(train_steps, bool) or int(train_steps) != train_steps or train_steps < 1:
        raise ConfigError(f"train_steps={train_steps!r} must be a positive integer")
    train_steps = int(train_steps)
    wanted = min(int(wanted or math.ceil(train_steps / config.epochs)), train_steps)
    spe = next((d for d in range(wanted, (wanted + 1) // 2 - 1, -1) if d >= 1 and train_steps % d == 0), None)
    note = ""
    if spe is None:
        spe = wanted
        note = (f"train_steps={train_steps} has no divisor in [{(wanted + 1) // 2}, {wanted}]: training runs "
                f"{math.ceil(train_steps / spe) * spe} steps ({math.ceil(train_steps / spe)} x {spe})")
    epochs = math.ceil(train_steps / spe)
    warmup = min(epochs, int(round(config.warmup_epochs / config.epochs * epochs)))
    return StepPlan(epochs, spe, warmup, note)

