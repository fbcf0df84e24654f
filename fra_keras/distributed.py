"""Cross-replica helpers: every batch-global quantity of FRA goes through these.

FRA has several quantities that the reference computes over the *global* batch (METHOD.md 2.3, 3.4):
the mean of the mask embeddings, the Sinkhorn row / column sums, the mean-entropy average and the
prototype EMA. Under a `tf.distribute` strategy each replica sees only its share of the batch, so those
sums are all-reduced here. Outside a strategy (or with one replica) the helpers are the identity, so the
loss functions stay pure and testable with NumPy.

`ReplicaContext.all_reduce` is differentiable (its gradient is the all-reduce of the upstream
gradients), so a loss that uses a global mean gets the exact gradient of the global-batch loss. This is
what makes one replica on batch 2B equal two replicas on B each (METHOD.md 3.6 notes the PyTorch code
only back-propagates through the local share; a single-device global-batch port is the reference here).
"""

from __future__ import annotations

import tensorflow as tf


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


def make_strategy(name: str = "auto"):
    """Pick a `tf.distribute` strategy by name.

    auto: MultiWorkerMirroredStrategy when `TF_CONFIG` names several workers, MirroredStrategy when
    several GPUs are visible, otherwise the default (single-device) strategy.
    default | mirrored | multi-worker | tpu: that strategy (tpu resolves the TPU from the environment).
    """
    import json
    import os

    allowed = ("auto", "default", "mirrored", "multi-worker", "tpu")
    if name not in allowed:
        raise ValueError(f"strategy={name!r} is not allowed; choose one of {list(allowed)}")
    if name == "auto":
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
        workers = tf_config.get("cluster", {}).get("worker", [])
        if len(workers) > 1:
            name = "multi-worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
