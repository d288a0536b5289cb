"""Class geometry of a set of points: how well the classes of the probe are separated.

:func:`class_geometry` takes points ``x`` float [N, D] (high-D features or 2D map coordinates)
and labels int64 [N] (-1 unknown, ignored) and returns, for the labelled points:

- ``inter``: mean distance between class centroids;
- ``intra``: mean over classes of the mean squared distance to the class centroid (variance);
- ``ratio``: sqrt(intra) / inter, scale-free (lower = better separated);
- ``davies_bouldin``: mean over classes of the worst (s_i + s_j) / d(c_i, c_j) (lower = better);
- ``knn_consistency``: fraction of the 10 nearest neighbours sharing a point's label;
- ``eff_rank``: exp(entropy of the normalised singular values) of the centred points;
- ``leaving``: fraction of points whose nearest centroid is another class's;
- ``class_separation``: per class, distance to the nearest other centroid over the class's own
  spread (higher = better), as {class: value}.

Points are subsampled to at most ``MAX_POINTS`` with a stride (deterministic, class mix kept).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_POINTS = 600
KNN = 10


def _subsample(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = labels >= 0
    x, labels = x[keep], labels[keep]
    if len(labels) > MAX_POINTS:
        order = np.argsort(labels, kind="stable")  # a stride over class-sorted rows keeps the mix
        picked = order[np.linspace(0, len(order) - 1, MAX_POINTS).astype(np.int64)]
        x, labels = x[picked], labels[picked]
    return np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0), labels


def effective_rank(x: np.ndarray) -> float:
    centred = x - x.mean(0, keepdims=True)
    # Singular values from the eigenvalues of the smaller Gram matrix: same values, a fraction
    # of the cost of an SVD of the [N, D] matrix.
    gram = centred.T @ centred if centred.shape[1] <= centred.shape[0] else centred @ centred.T
    singular = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0.0, None))
    total = singular.sum()
    if total <= 0:
        return 0.0
    p = singular[singular > 1e-9 * total] / total
    return float(math.exp(-(p * np.log(p)).sum()))


def class_geometry(x: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None:
    """The metrics above, or None with fewer than two classes of at least two points."""
    x, labels = _subsample(np.asarray(x), np.asarray(labels, dtype=np.int64))
    classes, counts = np.unique(labels, return_counts=True)
    classes = classes[counts >= 2]
    if len(classes) < 2:
        return None
    rows = np.isin(labels, classes)
    x, labels = x[rows], labels[rows]
    centroids = np.stack([x[labels == c].mean(0) for c in classes])
    spread_sq = np.array([((x[labels == c] - centroids[i]) ** 2).sum(1).mean()
                          for i, c in enumerate(classes)])
    spread = np.array([np.sqrt(((x[labels == c] - centroids[i]) ** 2).sum(1)).mean()
                       for i, c in enumerate(classes)])
    centroid_d = np.sqrt(((centroids[:, None] - centroids[None]) ** 2).sum(-1))
    off = ~np.eye(len(classes), dtype=bool)
    inter = float(centroid_d[off].mean())
    intra = float(spread_sq.mean())
    tiny = 1e-12
    nearest_other = np.where(off, centroid_d, np.inf).min(1)
    db_terms = np.where(off, (spread[:, None] + spread[None]) / np.maximum(centroid_d, tiny), 0)
    to_centroid = ((x[:, None] - centroids[None]) ** 2).sum(-1)
    own = np.searchsorted(classes, labels)
    return {
        "inter": inter, "intra": intra,
        "ratio": math.sqrt(intra) / max(inter, tiny),
        "davies_bouldin": float(db_terms.max(1).mean()),
        "knn_consistency": _knn_consistency(x, labels),
        "eff_rank": effective_rank(x),
        "leaving": float((to_centroid.argmin(1) != own).mean()),
        "class_separation": {int(c): float(nearest_other[i] / max(math.sqrt(spread_sq[i]), tiny))
                             for i, c in enumerate(classes)},
        "n": int(len(labels)),
    }


def _knn_consistency(x: np.ndarray, labels: np.ndarray) -> float:
    k = min(KNN, len(labels) - 1)
    squared = (x * x).sum(1)
    distances = squared[:, None] + squared[None] - 2.0 * x @ x.T
    np.fill_diagonal(distances, np.inf)
    neighbours = np.argpartition(distances, k - 1, axis=1)[:, :k]
    return float((labels[neighbours] == labels[:, None]).mean())
