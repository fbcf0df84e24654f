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


def sinkhorn_targets(teacher_logits, teacher_temperature=0.04, sinkhorn_iterations=3, sinkhorn_epsilon=0.0):
    """The clustering loss's soft targets: `sinkhorn(sinkhorn_input(teacher_logits, ...))`.

    Args: teacher_logits (N, K) target cosines. Returns: (N, K) float32, rows sum to 1, no gradient.
    """
    return sinkhorn(sinkhorn_input(teacher_logits, teacher_temperature, sinkhorn_epsilon), sinkhorn_iterations)


def clustering_loss_to_targets(student_logits, targets, student_temperature=0.1, me_max_weight=1.0,
                               weights=None):
    """Cross-entropy of the student's assignments to given soft targets, plus the mean-entropy term.

    L = sum_n w_n sum_k -Q_nk log softmax(s_n / T_s)_k / sum_n w_n
        + me_max_weight * (sum_k pbar_k log pbar_k + log K),
    pbar = mean_n softmax(s_n / T_s) over ALL N pixels of the global batch (weights do not enter it).
    Sums over n run over the global batch (`fra_keras.distributed`), so a replica's share of the
    gradient is that of the global loss.

    Args:
      student_logits: (N, K) online per-pixel cosines to the K mask embeddings.
      targets: (N, K) soft targets (rows sum to 1), treated as constants.
      weights: None (every pixel counts 1: the plain mean) or (N,) non-negative pixel weights, e.g.
        1 where the pixel has a target from the other view and 0 elsewhere (`cross_view_clustering_loss`);
        an all-zero weight vector gives a cross-entropy of 0.
    Returns: scalar float32; the entropy term is in [0, log K].
    """
    s = _f32(student_logits)
    targets = tf.stop_gradient(_f32(targets))
    log_p = tf.nn.log_softmax(s / student_temperature, axis=-1)
    per_pixel = tf.reduce_sum(-targets * log_p, axis=-1)
    if weights is None:
        cross_entropy = tf.reduce_mean(per_pixel)
    else:
        w = tf.stop_gradient(_f32(weights))
        # Global weighted mean: local sum / (global weight sum / replicas); summed over replicas with the
        # 1/replicas loss scaling of the train step this is sum_all(w CE) / sum_all(w).
        total = distributed.cross_replica_mean(tf.reduce_sum(w))
        cross_entropy = tf.reduce_sum(w * per_pixel) / tf.maximum(total, 1e-12)
    mean_probs = distributed.cross_replica_mean(tf.reduce_mean(tf.exp(log_p), axis=0))
    k = tf.cast(tf.shape(s)[-1], tf.float32)
    # log(pbar) from the mean of probabilities; the floor only guards 0 * log 0 (pbar >= 0 exactly).
    me_max = tf.reduce_sum(mean_probs * tf.math.log(tf.maximum(mean_probs, 1e-30))) + tf.math.log(k)
    return cross_entropy + float(me_max_weight) * me_max


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
    targets = sinkhorn_targets(teacher_logits, teacher_temperature, sinkhorn_iterations, sinkhorn_epsilon)
    return clustering_loss_to_targets(student_logits, targets, student_temperature, me_max_weight)


# Cross-view targets (opt-in `cluster_targets="cross_view"`, docs/method.md "Region recipes") --------
# A view's geometry is its crop in the source image and its flip, (B, 5) float32
# [y0, x0, y1, x1, flipped] with the box in fractions of the source height / width
# (`fra_keras.data.augment.crop_geometry`). Grid coordinates are continuous (row, col) positions on an
# (h, w) feature grid, with cell centres at integers 0 .. h-1 / 0 .. w-1.
def grid_correspondence(geometry_from, geometry_to, height: int, width: int):
    """Where each cell centre of view A's (height, width) grid lies on view B's grid.

    Both views are crops of the same source image, resized to the same square and possibly flipped
    horizontally (the flip is applied after the crop). A cell centre at fractions (v, u) of view A maps
    to the source point (y0 + v (y1 - y0), x0 + u' (x1 - x0)) with u' = 1 - u if A is flipped, and
    from there into B's frame the same way backwards.

    Args:
      geometry_from: (B, 5) geometry of view A (the grid whose cells are mapped).
      geometry_to: (B, 5) geometry of view B.
      height, width: the feature grid (both views share it).
    Returns: (coords, valid): coords (B, height, width, 2) float32 (row, col) on B's grid, valid
      (B, height, width) float32, 1 where the point lies inside view B's crop, else 0.
    """
    ga = _f32(geometry_from)[:, tf.newaxis, tf.newaxis, :]
    gb = _f32(geometry_to)[:, tf.newaxis, tf.newaxis, :]
    v = (tf.range(height, dtype=tf.float32) + 0.5) / float(height)
    u = (tf.range(width, dtype=tf.float32) + 0.5) / float(width)
    v = tf.broadcast_to(v[tf.newaxis, :, tf.newaxis], [1, height, width])
    u = tf.broadcast_to(u[tf.newaxis, tf.newaxis, :], [1, height, width])

    def unflip(x, g):  # displayed horizontal fraction <-> fraction within the crop
        return tf.where(g[..., 4] > 0.5, 1.0 - x, x)

    y = ga[..., 0] + v * (ga[..., 2] - ga[..., 0])
    x = ga[..., 1] + unflip(u, ga) * (ga[..., 3] - ga[..., 1])
    vb = (y - gb[..., 0]) / tf.maximum(gb[..., 2] - gb[..., 0], 1e-12)
    ub = unflip((x - gb[..., 1]) / tf.maximum(gb[..., 3] - gb[..., 1], 1e-12), gb)
    valid = tf.cast((vb >= 0.0) & (vb <= 1.0) & (ub >= 0.0) & (ub <= 1.0), tf.float32)
    coords = tf.stack([vb * float(height) - 0.5, ub * float(width) - 0.5], axis=-1)
    return coords, valid


def bilinear_sample(maps, coords):
    """Bilinear interpolation of per-image maps at continuous grid positions, clamped to the grid.

    Args:
      maps: (B, h, w, K) values on a grid (cell centres at integer positions).
      coords: (B, h', w', 2) float32 (row, col) positions; positions outside [0, h-1] x [0, w-1] take
        the nearest border value.
    Returns: (B, h', w', K) float32; a convex combination of at most four cells, so rows that sum to
      1 in `maps` still do.
    """
    maps = _f32(maps)
    shape = tf.shape(maps)
    h, w = shape[1], shape[2]
    row = tf.clip_by_value(coords[..., 0], 0.0, tf.cast(h - 1, tf.float32))
    col = tf.clip_by_value(coords[..., 1], 0.0, tf.cast(w - 1, tf.float32))
    r0 = tf.floor(row)
    c0 = tf.floor(col)
    fr = (row - r0)[..., tf.newaxis]
    fc = (col - c0)[..., tf.newaxis]
    r0 = tf.cast(r0, tf.int32)
    c0 = tf.cast(c0, tf.int32)
    r1 = tf.minimum(r0 + 1, h - 1)
    c1 = tf.minimum(c0 + 1, w - 1)

    def at(r, c):
        return tf.gather_nd(maps, tf.stack([r, c], axis=-1), batch_dims=1)

    top = (1.0 - fc) * at(r0, c0) + fc * at(r0, c1)
    bottom = (1.0 - fc) * at(r1, c0) + fc * at(r1, c1)
    return (1.0 - fr) * top + fr * bottom


def cross_view_clustering_loss(student_logits, teacher_logits, student_geometry, teacher_geometry,
                               student_temperature=0.1, teacher_temperature=0.04, sinkhorn_iterations=3,
                               me_max_weight=1.0, sinkhorn_epsilon=0.0):
    """Clustering loss whose targets come from the OTHER view, carried over the crops' overlap.

    The teacher's Sinkhorn targets are computed on its own view exactly as in `clustering_loss`
    (balanced over all of that view's pixels in the global batch); each student pixel then takes the
    target at the same point of the face in the teacher's view (`grid_correspondence`,
    `bilinear_sample`). Pixels outside the overlap get no cross-entropy; the mean-entropy term covers all
    student pixels. A partition of the image frame, which satisfies the same-view loss exactly, is
    penalised here because one face point sits at different frame positions in two crops
    (docs/method.md, "Region recipes").

    Args:
      student_logits: (B, h, w, K) online cosines of view A.
      teacher_logits: (B, h, w, K) target cosines of view B.
      student_geometry / teacher_geometry: (B, 5) geometries of views A / B.
    Returns: scalar float32.
    """
    s = _f32(student_logits)
    t = _f32(teacher_logits)
    shape = tf.shape(t)
    k = shape[-1]
    targets = sinkhorn_targets(tf.reshape(t, [-1, k]), teacher_temperature, sinkhorn_iterations,
                               sinkhorn_epsilon)
    targets = tf.reshape(targets, shape)
    height, width = s.shape[1], s.shape[2]
    if height is None or width is None:
        raise ValueError("cross_view_clustering_loss needs a static feature grid; student_logits has "
                         f"shape {s.shape}")
    coords, valid = grid_correspondence(student_geometry, teacher_geometry, height, width)
    carried = bilinear_sample(targets, coords)
    return clustering_loss_to_targets(tf.reshape(s, [-1, k]), tf.reshape(carried, [-1, k]),
                                      student_temperature, me_max_weight, tf.reshape(valid, [-1]))


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
