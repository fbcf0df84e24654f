"""Strategies, cross-replica helpers and chief-only writing: every batch-global quantity of FRA goes here.

Cross-replica mathematics
-------------------------
FRA has several quantities that the reference computes over the *global* batch (docs/method.md, "Neck
and heatmaps", "Clustering loss and Sinkhorn"): the mean of the mask embeddings, the Sinkhorn row /
column sums, the mean-entropy average and the prototype EMA. Under a `tf.distribute` strategy each
replica sees only its share of the batch, so those sums are all-reduced here (`cross_replica_sum` /
`cross_replica_mean`). Outside a strategy (or with one replica) the helpers are the identity, so the
loss functions stay pure and testable with NumPy.

Their gradients are complete: every replica receives the gradient of the *global* loss, not only of
its own. `ReplicaContext.all_reduce` (TF 2.21, tensorflow/python/distribute/distribute_lib.py) wraps the
reduction in a custom gradient whose backward pass is the same all-reduce of the upstream gradients;
with each replica's loss divided by the number of replicas R and the replicas' gradients summed, replica
r gets (1/R) sum_s dL_s/dx_r. tests/test_distributed.py checks both helpers against the analytic
gradient of a toy loss, and a training step against one device within the float32 floor
(docs/scaling.md, "2. Cross-replica mathematics"). This is what makes one replica on batch 2B equal two
replicas on B each (docs/method.md, "Deliberate deviations and extensions", item 1: the PyTorch code only
back-propagates through the local share; a single-device global-batch port is the reference here).
The other pieces of that equivalence live elsewhere: BatchNorm with `synchronized=True` (config
`sync_batchnorm`), the loss divided by the number of replicas before the gradient (gradients are summed
across replicas; `FRA.train_step`), and metrics computed from all-reduced values.

Strategies and workers
----------------------
`make_strategy(name)` maps the `--strategy` flag to a strategy; `is_chief()` says whether this process
writes the run's artefacts (task type "chief", or worker 0 when the cluster has no chief, or a process
without `TF_CONFIG`). `chief_output_dir(path)` gives non-chief workers a temporary folder that is deleted
afterwards, the usual Keras / TF convention: every worker executes the same saving code (reads of
on-read synchronised variables such as metric totals are collective operations under
MultiWorkerMirroredStrategy, so skipping them on some workers could deadlock), but only the chief's
files survive. See docs/scaling.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi-worker", "tpu")


# Cross-replica helpers -----------------------------------------------------------------------------
def _replica_context():
    """The active replica context when more than one replica is in sync, else None."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def num_replicas() -> int:
    """Number of replicas in sync in the current context (1 outside a strategy)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is not None:
        return int(ctx.num_replicas_in_sync)
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def cross_replica_sum(x):
    """Sum of `x` over all replicas (identity with one replica)."""
    ctx = _replica_context()
    if ctx is None:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def cross_replica_mean(x):
    """Mean of `x` over replicas. With equal per-replica batches, the mean of per-replica batch means
    is the global-batch mean."""
    ctx = _replica_context()
    if ctx is None:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, x)


def in_multi_worker_mode(strategy=None) -> bool:
    """Whether `strategy` (default: the current one) is a MultiWorkerMirroredStrategy spanning hosts."""
    strategy = strategy or tf.distribute.get_strategy()
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())  # noqa: SLF001 (what Keras itself checks)


def step_outputs(logs: dict) -> dict:
    """Make `train_step` / `test_step` outputs survive Keras' multi-worker reduction.

    Keras 3 (TF backend) reduces step outputs under multi-worker with `strategy.reduce("MEAN", v,
    axis=0)`, which fails on scalars ("Invalid reduction dimension 0 for input with 0 dimensions",
    tensorflow/tensorflow#72388). Our outputs are already global (identical on every replica), so they
    get a leading axis of length 1 there, which that reduction removes again. Elsewhere: unchanged.
    """
    if not in_multi_worker_mode():
        return logs
    return {k: tf.reshape(v, [1]) for k, v in logs.items()}


# Cluster / chief -------------------------------------------------------------------------------------
def tf_config() -> dict:
    """The parsed `TF_CONFIG` environment variable ({} when unset or empty)."""
    text = os.environ.get("TF_CONFIG", "") or "{}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG={text!r} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"TF_CONFIG={text!r} must be a JSON object with 'cluster' and 'task'")
    return value


def cluster_size(config: dict | None = None) -> int:
    """Number of training tasks (chief + workers) that `TF_CONFIG` names; 0 without a cluster."""
    cluster = (tf_config() if config is None else config).get("cluster", {}) or {}
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def task(config: dict | None = None) -> tuple[str | None, int]:
    """(task type, task index) of this process from `TF_CONFIG`; (None, 0) without one."""
    info = (tf_config() if config is None else config).get("task", {}) or {}
    return info.get("type"), int(info.get("index", 0) or 0)


def is_chief(config: dict | None = None) -> bool:
    """Whether this process writes checkpoints, logs and final models.

    True for task type "chief", for worker 0 when the cluster has no chief, and for a process without
    `TF_CONFIG` (single host). False for the other workers and for evaluators / parameter servers.
    """
    config = tf_config() if config is None else config
    task_type, index = task(config)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    if task_type == "worker":
        has_chief = bool((config.get("cluster", {}) or {}).get("chief"))
        return not has_chief and index == 0
    return False


@contextlib.contextmanager
def chief_output_dir(path: str, chief: bool | None = None):
    """Yield the folder this process should write `path`'s artefacts to.

    The chief gets `path` itself. Other workers get a fresh temporary folder, deleted when the block
    exits (even on error), so that every worker runs the same saving code but only the chief's files
    remain.
    """
    if is_chief() if chief is None else chief:
        yield path
        return
    tmp = tempfile.mkdtemp(prefix="fra-worker-")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# Strategy factory ------------------------------------------------------------------------------------
def resolve_strategy_name(name: str = "auto") -> str:
    """The concrete strategy `name` stands for (`auto` resolved from TF_CONFIG and visible GPUs)."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy={name!r} is not allowed; choose one of {list(STRATEGIES)}")
    if name != "auto":
        return name
    if cluster_size() > 1:
        return "multi-worker"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def make_strategy(name: str = "auto", devices=None):
    """Pick a `tf.distribute` strategy by name.

    auto: MultiWorkerMirroredStrategy when `TF_CONFIG` names several tasks (chief + workers),
      MirroredStrategy when several GPUs are visible, otherwise the default (single-device) strategy.
    default: the default strategy (one device).
    mirrored: MirroredStrategy over `devices` (default: all GPUs, or the CPU when there is none).
    multi-worker: MultiWorkerMirroredStrategy from `TF_CONFIG` (NCCL on GPUs, ring on CPUs). It must be
      created before TensorFlow runs any op in the process.
    tpu: TPUStrategy; the TPU is found by `TPUClusterResolver` (set `TPU_NAME`, e.g. "local" on a TPU VM).

    The global batch (`FRAConfig.batch_size`) is split evenly across replicas by Keras; the learning
    rate is the config's whatever the number of replicas (no batch-size scaling, as in the reference).
    """
    name = resolve_strategy_name(name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi-worker":
        if cluster_size() < 1:
            raise ValueError("strategy='multi-worker' needs TF_CONFIG naming the cluster, e.g. "
                             '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                             '"task": {"type": "worker", "index": 0}}; see docs/scaling.md')
        return tf.distribute.MultiWorkerMirroredStrategy()
    tpu_name = os.environ.get("TPU_NAME") or None
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_name)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise ValueError(f"strategy='tpu': no TPU found (TPU_NAME={tpu_name!r}): {e}. On a Cloud TPU VM set "
                         "TPU_NAME=local; see docs/scaling.md") from None
    return tf.distribute.TPUStrategy(resolver)


def describe(strategy) -> str:
    """One line for logs: strategy class, replicas and, for multi-worker, this task."""
    kind = type(strategy).__name__
    if kind == "_DefaultDistributionStrategy":
        kind = "default strategy"
    text = f"{kind}, {strategy.num_replicas_in_sync} replica(s)"
    task_type, index = task()
    if cluster_size() > 1 and task_type is not None:
        text += f", task {task_type}:{index} of {cluster_size()}{' (chief)' if is_chief() else ''}"
    return text


def weights_digest(model) -> str:
    """SHA-256 (16 hex digits) of every model variable (and the optimiser's), in order.

    Workers of one multi-worker run must print the same digest: it checks that they stayed in sync.
    """
    import numpy as np

    digest = hashlib.sha256()
    variables = list(model.weights)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    for variable in variables:
        value = np.ascontiguousarray(np.asarray(variable))
        digest.update(str(value.dtype).encode() + str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]
