"""Training callbacks that never lose work: atomic checkpoints with resume, and a non-finite-loss guard.

Checkpoint layout (inside a run's `checkpoints/` folder)::

    checkpoints/
      epoch-0003/            one folder per saved epoch, written as `.tmp-*` then renamed
        model.weights.h5     every model variable (online, target, prototypes, BN statistics) and the
                             optimiser state (iterations, LARS momentum buffers)
        state.json           {"epoch": 3, "step": 75, ...}: epochs completed, optimiser steps
      latest                 text file naming the newest complete folder (replaced atomically)

A crash at any moment leaves `latest` pointing at a complete checkpoint: the folder is complete before
it gets its final name, and `latest` is replaced with `os.replace`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time

import keras

from fra_keras.config import atomic_write_text


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN / Inf loss; the last good checkpoint is kept."""


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop training at the first batch whose running loss is NaN or Inf.

    Unlike `keras.callbacks.TerminateOnNaN` it remembers what happened (`self.failure`), so the caller
    can report it clearly, and `AtomicCheckpoint` refuses to save after it.
    """

    def __init__(self, monitor="loss"):
        super().__init__()
        self.monitor = monitor
        self.failure = None

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if not math.isfinite(value):
            step = int(self.model.optimizer.iterations.numpy())
            self.failure = (f"non-finite {self.monitor}={value} at optimizer step {step} (batch {batch} of "
                            "the epoch); training stopped, the last good checkpoint is kept. Lower the "
                            "learning rate, check the input data, or use float32 precision.")
            self.model.stop_training = True


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save the full training state at the end of every `every_epochs` epochs, atomically.

    Args:
      directory: the `checkpoints/` folder of a run.
      every_epochs: save period in epochs (the last epoch of `fit` is always saved).
      keep: how many checkpoint folders to keep: the newest `keep` `epoch-NNNN/` folders stay, older
        ones are deleted once a newer one is complete (`latest` always names a kept one).
      guard: an optional `NonFiniteLossGuard`; no checkpoint is written after it fired.
      chief_only: under multi-worker training (`TF_CONFIG`), workers other than the chief save to a
        temporary folder that is deleted at once, so that every worker runs the same (possibly
        collective) variable reads but only the chief's checkpoints remain (`distributed.is_chief`).
        False: always write to `directory` (the caller already gave non-chief workers a private folder).
    """

    def __init__(self, directory, every_epochs=1, keep=1, guard=None, chief_only=True):
        super().__init__()
        self.directory = directory
        self.every_epochs = max(int(every_epochs), 1)
        self.keep = max(int(keep), 1)
        self.guard = guard
        self.chief_only = bool(chief_only)
        self._epochs = None

    def _writes(self):
        from fra_keras.distributed import is_chief

        return not self.chief_only or is_chief()

    def on_train_begin(self, logs=None):
        self._epochs = self.params.get("epochs") if self.params else None
        if self._writes():
            os.makedirs(self.directory, exist_ok=True)
            remove_stale_temporaries(self.directory)

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.failure:
            return
        if logs and "loss" in logs and not math.isfinite(float(logs["loss"])):
            return
        done = epoch + 1
        if done % self.every_epochs and done != self._epochs:
            return
        if not self._writes():
            import tempfile

            scratch = tempfile.mkdtemp(prefix="fra-ckpt-worker-")
            try:
                save_checkpoint(self.model, scratch, done, logs)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return
        save_checkpoint(self.model, self.directory, done, logs)
        self._prune()

    def _prune(self):
        folders = sorted(f for f in os.listdir(self.directory) if f.startswith("epoch-"))
        for old in folders[:-self.keep]:
            shutil.rmtree(os.path.join(self.directory, old), ignore_errors=True)


class StepCounter(keras.callbacks.Callback):
    """Counts the training steps `fit` ran, so the caller can tell when the input ended early (Keras
    only warns "Your input ran out of data" and returns normally), and times them for a steady-state
    throughput.

    The first `warmup_steps` steps are left out of the timing: they include tracing / XLA compilation
    and the input pipeline filling its buffers. The window runs from the end of step `warmup_steps` to
    the end of the last step, so it counts everything the run did in between, the epoch-end callbacks
    (checkpoints, the monitor) included: the rate a user gets, not the step alone (benchmarks/
    train_step.py times that). `NonFiniteLossGuard` reads every step's loss, so a step's end is when
    its results exist, also on an accelerator.
    """

    def __init__(self, warmup_steps=1, clock=time.perf_counter):
        super().__init__()
        self.count = 0
        self.warmup_steps = max(int(warmup_steps), 1)
        self.clock = clock
        self._start = self._end = None

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1
        now = self.clock()
        if self.count == self.warmup_steps:
            self._start = now
        elif self.count > self.warmup_steps:
            self._end = now

    @property
    def timed_steps(self) -> int:
        """Steps inside the timing window (0 until a step after the warm-up has ended)."""
        return self.count - self.warmup_steps if self._end is not None else 0

    def samples_per_second(self, global_batch: int):
        """Steady-state throughput in samples (view pairs) per second over the timed steps, or None when
        no step ran after the warm-up."""
        if not self.timed_steps or self._end <= self._start:
            return None
        return self.timed_steps * int(global_batch) / (self._end - self._start)


class StepTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback with per-step scalars and a single learning-rate tag.

    * Every `log_every` optimiser steps the batch logs are written as `batch_<name>` scalars, numbered
      by the optimiser step (`optimizer.iterations`), so that the curves of a resumed run continue
      where the checkpoint left off instead of restarting at 0. `log_every=0`: epoch scalars only.
      As with Keras' own `update_freq`, batch logs are the model's metric trackers: running means
      since the start of the epoch (FRA's `lr` and `ema_momentum` included).
    * The learning rate appears once, as `lr` (`epoch_lr`, `batch_lr`): the rate the model logs for
      each step, the one in history.csv. Keras' own `learning_rate` copy is not added.
    """

    def __init__(self, log_dir, log_every=10, **kwargs):
        kwargs.setdefault("write_graph", False)
        super().__init__(log_dir, update_freq="epoch", **kwargs)
        self.log_every = max(int(log_every), 0)

    def on_train_batch_end(self, batch, logs=None):
        if not self.log_every or not isinstance(logs, dict):
            return
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.log_every:
            return
        with self._train_writer.as_default():
            for name, value in logs.items():
                self.summary.scalar(f"batch_{name}", value, step=step)

    def _collect_learning_rate(self, logs):
        return logs


class HistoryCSV(keras.callbacks.Callback):
    """One CSV row per epoch with every logged metric (like `CSVLogger`, without empty `val_` columns).

    Rows are appended and flushed at each epoch end; with `append=True` (resume) the file is continued,
    and rows of epochs that will be re-run are dropped first, so the file never holds an epoch twice.
    """

    def __init__(self, path, append=False):
        super().__init__()
        self.path = path
        self.append = append
        self.keys = None

    def on_train_begin(self, logs=None):
        import csv

        rows = []
        if self.append and os.path.isfile(self.path):
            with open(self.path) as f:
                reader = csv.DictReader(f)
                self.keys = [k for k in (reader.fieldnames or []) if k != "epoch"] or None
                rows = list(reader)
        initial = getattr(self, "initial_epoch", None)
        if initial is not None:
            rows = [r for r in rows if int(r["epoch"]) < initial]
        if self.keys is not None:
            self._rewrite(rows)
        elif os.path.exists(self.path) and not self.append:
            os.remove(self.path)

    def _rewrite(self, rows):
        import csv
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["epoch"] + self.keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())

    def on_epoch_end(self, epoch, logs=None):
        import csv

        logs = {k: _to_float(v) for k, v in (logs or {}).items() if _to_float(v) is not None}
        new_file = self.keys is None
        if new_file:
            self.keys = sorted(logs)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["epoch"] + self.keys, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({"epoch": epoch, **logs})


def save_checkpoint(model, directory, epoch, logs=None):
    """Write `directory/epoch-XXXX/` atomically and point `latest` at it. Returns the folder path."""
    os.makedirs(directory, exist_ok=True)
    name = f"epoch-{epoch:04d}"
    tmp = os.path.join(directory, f".tmp-{name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    model.save_weights(os.path.join(tmp, "model.weights.h5"))
    state = {"epoch": int(epoch), "step": int(model.optimizer.iterations.numpy()) if model.optimizer else 0,
             "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "logs": {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}}
    atomic_write_text(os.path.join(tmp, "state.json"), json.dumps(state, indent=2) + "\n")
    final = os.path.join(directory, name)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(os.path.join(directory, "latest"), name + "\n")
    return final


def remove_stale_temporaries(directory):
    """Delete `.tmp-*` checkpoint folders left by a process that was killed while saving.

    Only folders of processes that no longer run are removed (the pid is the last part of the name)."""
    for name in os.listdir(directory):
        if not name.startswith(".tmp-"):
            continue
        pid = name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or _process_alive(int(pid))):
            continue   # being written right now
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def save_model_files(model, folder):
    """The end-of-run artefacts: `model.keras` (full model) and `backbone.weights.h5` (online ResNet),
    each written under a temporary name and renamed into place."""
    tmp_model = os.path.join(folder, f".tmp-model-{os.getpid()}.keras")
    model.save(tmp_model)
    os.replace(tmp_model, os.path.join(folder, "model.keras"))
    tmp_backbone = os.path.join(folder, f".tmp-backbone-{os.getpid()}.weights.h5")
    model.backbone.save_weights(tmp_backbone)
    os.replace(tmp_backbone, os.path.join(folder, "backbone.weights.h5"))


def latest_checkpoint(directory):
    """(folder, state dict) of the newest complete checkpoint in `directory`, or (None, None)."""
    pointer = os.path.join(directory, "latest")
    if not os.path.isfile(pointer):
        return None, None
    with open(pointer) as f:
        folder = os.path.join(directory, f.read().strip())
    state_path = os.path.join(folder, "state.json")
    if not os.path.isfile(state_path) or not os.path.isfile(os.path.join(folder, "model.weights.h5")):
        return None, None
    with open(state_path) as f:
        return folder, json.load(f)


def restore_checkpoint(model, folder):
    """Load a checkpoint folder into a compiled model (optimiser built). Returns its state dict."""
    if model.optimizer is None:
        raise ValueError("restore_checkpoint needs a compiled model (the optimiser state is restored too)")
    model.load_weights(os.path.join(folder, "model.weights.h5"))
    with open(os.path.join(folder, "state.json")) as f:
        return json.load(f)


def _to_float(value):
    """float(value), or None when it is not a number (NaN / Inf are kept)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _is_number(value):
    number = _to_float(value)
    return number is not None and math.isfinite(number)
