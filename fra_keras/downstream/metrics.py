"""Downstream metrics as pure NumPy functions (docs/method.md, "Downstream protocols"; docs/datasets.md).

Every function takes array-likes (NumPy arrays, lists or eager tensors) and returns Python floats or
NumPy arrays; nothing here depends on TensorFlow, so the same code scores predictions from Keras, from
a SavedModel or from another framework.

* classification: `top1_accuracy`, `mean_class_accuracy` (mean of the per-class recalls, the usual
  "average accuracy" of imbalanced FER sets), `per_class_accuracy`;
* attributes: `attribute_accuracy` -- mean binary accuracy over every known (sample, attribute) entry
  with a 0.5 threshold on the sigmoid (`utils.accuracy_multilabel` of the reference), labels -1 masked;
  `per_attribute_accuracy`;
* landmarks: `landmark_nme` -- per-sample normalised mean error, normalised by the outer-eye-corner
  distance (points 36 / 45 of the 68-point 300W order, 60 / 72 of the 98-point WFLW order: the
  "inter-ocular" convention of 300W / WFLW); `failure_rate` -- share of samples with NME above 10 %;
* `knn_accuracy` -- k-nearest-neighbour classification of frozen embeddings by cosine similarity (a
  cheap monitor; DINO-style weighted vote by default).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

#: Outer eye corners (image-left eye's outer corner, image-right eye's outer corner) per point count:
#: 300W / iBUG 68 -> 36, 45; WFLW 98 -> 60, 72; CelebA 5 (eye centres) -> 0, 1 (inter-pupil).
OUTER_EYE_CORNERS = {68: (36, 45), 98: (60, 72), 5: (0, 1)}
FAILURE_THRESHOLD = 0.10


def _labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {y.shape}")
    return y.astype(np.int64)


def _predictions(predictions, n: int) -> np.ndarray:
    """Class indices from indices (N,) or scores (N, C)."""
    p = np.asarray(predictions)
    if p.ndim == 2:
        p = np.argmax(p, axis=-1)
    if p.ndim != 1 or p.shape[0] != n:
        raise ValueError(f"predictions must be (N,) class indices or (N, C) scores with N={n}, "
                         f"got shape {np.asarray(predictions).shape}")
    return p.astype(np.int64)


def top1_accuracy(labels, predictions) -> float:
    """Share of samples whose predicted class (argmax of (N, C) scores, or (N,) indices) is the label."""
    y = _labels(labels)
    if y.size == 0:
        raise ValueError("top1_accuracy of an empty set")
    return float(np.mean(_predictions(predictions, y.shape[0]) == y))


def per_class_accuracy(labels, predictions, num_classes: Optional[int] = None) -> np.ndarray:
    """(C,) recall of each class; NaN for classes absent from `labels`."""
    y = _labels(labels)
    p = _predictions(predictions, y.shape[0])
    if num_classes is None:
        num_classes = int(max(y.max(initial=-1), p.max(initial=-1)) + 1)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        sel = y == c
        if sel.any():
            out[c] = float(np.mean(p[sel] == c))
    return out


def mean_class_accuracy(labels, predictions, num_classes: Optional[int] = None) -> float:
    """Mean over the classes present in `labels` of the per-class accuracy (balanced accuracy)."""
    acc = per_class_accuracy(labels, predictions, num_classes)
    if np.all(np.isnan(acc)):
        raise ValueError("mean_class_accuracy of an empty set")
    return float(np.nanmean(acc))


def _attribute_arrays(labels, scores, from_logits: bool):
    y = np.asarray(labels).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"labels and scores must both be (N, A); got {y.shape} and {s.shape}")
    if np.any((y != -1) & (y != 0) & (y != 1)):
        raise ValueError("attribute labels must be 0, 1 or -1 (unknown)")
    # sigmoid(logit) > 0.5  <=>  logit > 0
    predicted = (s > 0.0) if from_logits else (s > 0.5)
    known = y >= 0
    return y, predicted.astype(np.int64), known


def attribute_accuracy(labels, scores, from_logits: bool = True) -> float:
    """Mean binary accuracy over all known (sample, attribute) entries, threshold 0.5 on the sigmoid.

    Args:
      labels: (N, A) with 1 / 0, or -1 for unknown (masked: counts neither as right nor wrong).
      scores: (N, A) logits (`from_logits=True`) or probabilities.
    """
    y, predicted, known = _attribute_arrays(labels, scores, from_logits)
    if not known.any():
        raise ValueError("attribute_accuracy: every label is unknown (-1)")
    return float(np.mean(predicted[known] == y[known]))


def per_attribute_accuracy(labels, scores, from_logits: bool = True) -> np.ndarray:
    """(A,) accuracy of each attribute over its known labels; NaN where all labels are unknown."""
    y, predicted, known = _attribute_arrays(labels, scores, from_logits)
    right = ((predicted == y) & known).sum(axis=0).astype(np.float64)
    count = known.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, right / np.maximum(count, 1), np.nan)


def eye_corner_indices(num_points: int) -> Tuple[int, int]:
    """The two points whose distance normalises the NME (see `OUTER_EYE_CORNERS`)."""
    if num_points not in OUTER_EYE_CORNERS:
        raise ValueError(f"no inter-ocular convention for {num_points} landmarks; known: "
                         f"{sorted(OUTER_EYE_CORNERS)} (pass eye_indices=(i, j))")
    return OUTER_EYE_CORNERS[num_points]


def landmark_nme(predicted, target, eye_indices: Optional[Sequence[int]] = None,
                 visible=None) -> np.ndarray:
    """Per-sample normalised mean error (N,): mean over points of the Euclidean error, divided by the
    distance between the two outer eye corners of the ground truth (300W / WFLW inter-ocular NME).

    Args:
      predicted, target: (N, P, 2) landmark coordinates (any unit, the same for both).
      eye_indices: the normalising points; default from `P` (68 -> 36, 45; 98 -> 60, 72).
      visible: optional (N, P) bool; if given, the mean runs over visible points only.
    """
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 3 or p.shape[-1] != 2:
        raise ValueError(f"predicted and target must both be (N, P, 2); got {p.shape} and {t.shape}")
    i, j = eye_indices if eye_indices is not None else eye_corner_indices(p.shape[1])
    norm = np.linalg.norm(t[:, i] - t[:, j], axis=-1)
    if np.any(norm <= 0):
        raise ValueError("landmark_nme: zero inter-ocular distance in the ground truth")
    err = np.linalg.norm(p - t, axis=-1)  # (N, P)
    if visible is None:
        mean_err = err.mean(axis=1)
    else:
        v = np.asarray(visible, dtype=bool)
        mean_err = (err * v).sum(axis=1) / np.maximum(v.sum(axis=1), 1)
    return mean_err / norm


def failure_rate(nme, threshold: float = FAILURE_THRESHOLD) -> float:
    """Share of samples whose NME exceeds `threshold` (10 % by convention, FR@0.1)."""
    e = np.asarray(nme, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise ValueError("failure_rate of an empty set")
    return float(np.mean(e > threshold))


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_predict(train_embeddings, train_labels, query_embeddings, k: int = 20,
                temperature: Optional[float] = 0.07, num_classes: Optional[int] = None,
                batch_size: int = 1024) -> np.ndarray:
    """Class predictions (N_q,) by a k-nearest-neighbour vote under cosine similarity.

    Each query takes its `k` most similar training embeddings (ties in similarity: lower index first).
    Votes are weighted by exp(similarity / temperature) (DINO's monitor, T = 0.07) or, with
    `temperature=None`, count 1 each; the class with the largest total wins (ties: lower class index).
    """
    tr = _unit(train_embeddings)
    q = _unit(query_embeddings)
    y = _labels(train_labels)
    if tr.shape[0] != y.shape[0]:
        raise ValueError(f"{tr.shape[0]} training embeddings but {y.shape[0]} labels")
    if tr.shape[1] != q.shape[1]:
        raise ValueError(f"embedding sizes differ: train {tr.shape[1]}, query {q.shape[1]}")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    k = min(int(k), tr.shape[0])
    num_classes = int(num_classes or y.max() + 1)
    out = np.empty(q.shape[0], dtype=np.int64)
    for start in range(0, q.shape[0], batch_size):
        sim = q[start:start + batch_size] @ tr.T                     # (b, N)
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]       # (b, k)
        top = np.take_along_axis(sim, order, axis=1)
        weights = np.ones_like(top) if temperature is None else np.exp(top / float(temperature))
        votes = np.zeros((sim.shape[0], num_classes))
        np.add.at(votes, (np.arange(sim.shape[0])[:, None], y[order]), weights)
        out[start:start + batch_size] = np.argmax(votes, axis=1)
    return out


def knn_accuracy(train_embeddings, train_labels, query_embeddings, query_labels, k: int = 20,
                 temperature: Optional[float] = 0.07) -> float:
    """Top-1 accuracy of `knn_predict` on labelled queries."""
    pred = knn_predict(train_embeddings, train_labels, query_embeddings, k=k, temperature=temperature)
    return top1_accuracy(query_labels, pred)
