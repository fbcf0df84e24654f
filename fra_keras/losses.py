"""FRA losses and heatmap math as small pure functions (docs/method.md, "Losses"; docs/design.md, "Contracts").

Every function takes NumPy arrays or tensors, works channel-last, computes in float32 (also under mixed
precision: softmax, log-softmax, Sinkhorn and normalisation stay in float32, as autocast does in the
reference) and returns a float32 tensor. Batch-global sums go through `fra_keras.distributed`, which is
the identity outside a distribution strategy.

Symbols: B batch, K regions (facial mask embeddings), D embedding size, C backbone channels,
(h, w) feature-map grid, N = B*h*w pixels.
"""

from __future__ import annotations

import math

import tensorflow as tf

from fra_keras import distributed

# F.normalize(eps=1e-12) in the reference; tf.math.l2_normalize clips the squared norm instead.
_NORM_EPS = 1e-12
# `obj_attn = softmax(dots) + 1e-7` in models/fra.py: keeps every heatmap strictly positive.
ATTENTION_FLOOR = 1e-7


def _f32(x):
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def _normalize(x):
    return tf.math.l2_normalize(x, axis=-1, epsilon=_NORM_EPS)


def cosine_regression_loss(pred, target):
    """BYOL regression loss, 2 - 2 * mean cosine similarity over rows (docs/method.md, "Losses").

    Args:
      pred: (..., D) online predictions.
      target: (..., D) target projections (treated as constants by the caller).
    Returns: scalar float32 in [0, 4]; 0 when pred and target point the same way.
    """
    p = _normalize(_f32(pred))
    t = _normalize(_f32(target))
    return 2.0 - 2.0 * tf.reduce_mean(tf.reduce_sum(p * t, axis=-1))


def region_loss(pred, target, decorrelation_weight=0.02):
    """Region BYOL loss plus the inter-region decorrelation term (docs/method.md, "Losses").

    L = 2 - 2/(B K) sum_{i,k} <p_ik, t_ik> + w * mean_{i,k,j} C_i[k, j]^2 with C_i = p_i t_i^T and the
    diagonal of C_i zeroed (the mean runs over all K x K entries, i.e. 1/K * sum over j != k).
    The weight 0.02 is `loss_w_obj`, hard-coded in the official `compute_unigrad_loss`.

    Args:
      pred: (B, K, D) predicted region embeddings of one view.
      target: (B, K, D) target region embeddings of the other view (region k matches region k).
    Returns: scalar float32.
    """
    p = _normalize(_f32(pred))
    t = _normalize(_f32(target))
    positive = 2.0 - 2.0 * tf.reduce_mean(tf.reduce_sum(p * t, axis=-1))
    corr = tf.einsum("bkd,bjd->bkj", p, t)
    k = tf.shape(corr)[-1]
    off_diagonal = corr * (1.0 - tf.eye(k, dtype=corr.dtype))
    negative = tf.reduce_mean(tf.square(off_diagonal))
    return positive + float(decorrelation_weight) * negative


def sinkhorn(scores, iterations=3):
    """Balanced soft assignments by Sinkhorn-Knopp on probabilities (docs/method.md, "Clustering loss and Sinkhorn").

    Follows `distributed_sinkhorn` of the reference, where the exp(Q / eps) line is commented out, so the
    input is used as it is (teacher softmax probabilities): Q = P^T / sum(P); repeat: rows (prototypes)
    to 1/K each, columns (samples) to 1/N each; finally scale by N so that every row of the result sums
    to 1. Sums are global over replicas. No gradient flows through the result.

    Args:
      scores: (N, K) non-negative scores (probabilities).
      iterations: number of row/column normalisation rounds (3 in the reference).
    Returns: (N, K) float32; rows sum to 1, columns sum to about N_total / K.
    """
    q = tf.transpose(tf.stop_gradient(_f32(scores)))  # (K, N)
    k = tf.cast(tf.shape(q)[0], tf.float32)
    n_total = distributed.cross_replica_sum(tf.cast(tf.shape(q)[1], tf.float32))
    q = q / distributed.cross_replica_sum(tf.reduce_sum(q))
    for _ in range(int(iterations)):
        q = q / distributed.cross_replica_sum(tf.reduce_sum(q, axis=1, keepdims=True))
        q = q / k
        q = q / tf.reduce_sum(q, axis=0, keepdims=True)
        q = q / n_total
    q = q * n_total
    return tf.stop_gradient(tf.transpose(q))


def sinkhorn_input(teacher_logits, teacher_temperature=0.04, sinkhorn_epsilon=0.0):
    """What Sinkhorn balances, (N, K): the teacher's probabilities P = softmax(t / T_t), or exp(P / eps).

    `sinkhorn_epsilon` = 0 (the reference): P itself. The official code's `distributed_sinkhorn` takes
    an epsilon of 0.05 but its ``exp(Q / eps)`` line is commented out. `sinkhorn_epsilon` > 0 (opt-in,
    docs/method.md "Region recipes") restores that line. It is computed as exp((P - 1) / eps): the
    constant factor exp(-1 / eps) cancels in Sinkhorn's first step (Q / sum Q), on every replica alike,
    and keeps the exponent <= 0 (no overflow for small eps). With nearly uniform P this sharpens the
    targets by exp((P_k - P_j) / eps).
    """
    p = tf.nn.softmax(_f32(teacher_logits) / teacher_temperature, axis=-1)
    if not sinkhorn_epsilon:
        return p
    return tf.exp((p - 1.0) / float(sinkhorn_epsilon))


def clustering_loss(student_logits, teacher_logits, student_temperature=0.1, teacher_temperature=0.04,
                    sinkhorn_iterations=3, me_max_weight=1.0, sinkhorn_epsilon=0.0):
    """Semantic-relation loss of one view: cross-entropy to Sinkhorn targets + mean-entropy term.

    L = mean_n sum_k -Q_nk log softmax(s_n / T_s)_k + me_max_weight * (sum_k pbar_k log pbar_k + log K),
    Q = sinkhorn(softmax(t_n / T_t)), pbar = mean_n softmax(s_n / T_s) over the global batch
    (docs/method.md, "Clustering loss and Sinkhorn"; no centering: the reference's centre stays zero).
    `sinkhorn_epsilon` > 0 runs Sinkhorn on exp(P / eps) instead of P (see `sinkhorn_input`).

    Args:
      student_logits: (N, K) online per-pixel cosines to the K mask embeddings.
      teacher_logits: (N, K) target cosines for the same pixels (same view).
    Returns: scalar float32; the entropy term is in [0, log K].
    """
    s = _f32(student_logits)
    t = _f32(teacher_logits)
    targets = sinkhorn(sinkhorn_input(t, teacher_temperature, sinkhorn_epsilon), sinkhorn_iterations)
    log_p = tf.nn.log_softmax(s / student_temperature, axis=-1)
    cross_entropy = tf.reduce_mean(tf.reduce_sum(-targets * log_p, axis=-1))
    mean_probs = distributed.cross_replica_mean(tf.reduce_mean(tf.exp(log_p), axis=0))
    k = tf.cast(tf.shape(s)[-1], tf.float32)
    # log(pbar) from the mean of probabilities; the floor only guards 0 * log 0 (pbar >= 0 exactly).
    me_max = tf.reduce_sum(mean_probs * tf.math.log(tf.maximum(mean_probs, 1e-30))) + tf.math.log(k)
    return cross_entropy + float(me_max_weight) * me_max


def region_logits(pixel_embeddings, mask_embeddings):
    """Cosine similarity of every pixel embedding with every mask embedding (docs/method.md, "Neck and heatmaps").

    Args:
      pixel_embeddings: (B, h, w, D) per-pixel projections.
      mask_embeddings: (B, K, D) per image, or (K, D) shared by the batch (the batch-mean in training,
        the prototypes at inference).
    Returns: (B, h, w, K) float32 in [-1, 1].
    """
    p = _normalize(_f32(pixel_embeddings))
    m = _normalize(_f32(mask_embeddings))
    if m.shape.rank == 2:
        return tf.einsum("bhwd,kd->bhwk", p, m)
    return tf.einsum("bhwd,bkd->bhwk", p, m)


def region_attention(logits, scale=1.0):
    """Heatmaps: softmax over the K regions of logits / scale, plus 1e-7 (docs/method.md, "Neck and heatmaps").

    `scale` is `--lewel-scale` (1.0 in the paper recipe, so the heatmaps are soft).
    Args: logits (B, h, w, K). Returns: (B, h, w, K) float32; each pixel sums to 1 + K * 1e-7.
    """
    return tf.nn.softmax(_f32(logits) / float(scale), axis=-1) + ATTENTION_FLOOR


def region_heatmaps(pixel_embeddings, mask_embeddings, scale=1.0, return_logits=False):
    """The K facial-region heatmaps: `region_attention(region_logits(pixels, masks), scale)`.

    The one heatmap formula of the package: training (the neck, against the batch-mean mask
    embeddings), inference (`FRA.heatmaps`, against the prototypes), the export graph and the
    region-health monitor all call it.
    Args: as `region_logits`; `scale` as `region_attention`.
    Returns: (B, h, w, K) float32 heatmaps, or (heatmaps, logits) with `return_logits=True` (the
    clustering loss needs the cosines).
    """
    logits = region_logits(pixel_embeddings, mask_embeddings)
    heatmaps = region_attention(logits, scale)
    return (heatmaps, logits) if return_logits else heatmaps


def region_features(features, attention):
    """Weighted average pooling of the feature map with each heatmap (docs/method.md, "Neck and heatmaps").

    Each heatmap is normalised to sum 1 over space, then r[b, k] = sum_hw A[b, hw, k] F[b, hw].
    Args:
      features: (B, h, w, C) backbone feature map (raw, not projected, as in the reference).
      attention: (B, h, w, K) heatmaps.
    Returns: (B, K, C) float32.
    """
    f = _f32(features)
    a = _f32(attention)
    a = a / tf.reduce_sum(a, axis=[1, 2], keepdims=True)
    return tf.einsum("bhwk,bhwc->bkc", a, f)


def mean_pairwise_cosine(embeddings):
    """Mean cosine similarity over the K (K - 1) ordered pairs of distinct rows of (K, D) embeddings.

    1 when all K mask embeddings point the same way (every heatmap equal: the region branch is
    asleep), about 0 for random directions in high dimension. Returns a float32 scalar.
    """
    e = _normalize(_f32(embeddings))
    k = tf.cast(tf.shape(e)[0], tf.float32)
    gram = tf.matmul(e, e, transpose_b=True)
    return (tf.reduce_sum(gram) - tf.linalg.trace(gram)) / (k * (k - 1.0))


def max_entropy(num_regions: int) -> float:
    """log K, the largest value of the mean-entropy term and of the region-usage entropy."""
    return math.log(num_regions)
