"""Class geometry of a set of probe points: the one definition behind the dashboard's cluster
health and the geometry alerts.

Points ``x`` are float [N, D] (high-D probe features or a 2D map's coordinates) with labels
int [N]. Both the dashboard (:meth:`FrameBuilder.health
<sentrycam.backend.push_frames.FrameBuilder.health>`) and the geometry detectors
(:mod:`sentrycam.backend.audit.detectors.geometry`) read these numbers from here, so an alert
and the map it is about never disagree.

Which points count (one rule for every quantity):

- unlabelled points (label < 0) are left out, and so are the probe's held-out samples: callers
  pass labels through :func:`training_labels`, so the geometry is that of what the model trains
  on, on the features as on the maps;
- classes with fewer than :data:`MIN_CLASS_POINTS` points are left out (one point has no
  spread); a quantity over classes needs at least two classes left, else it is NaN (None for
  :func:`class_geometry`);
- non-finite coordinates count as 0 (a diverged layer collapses onto the origin, which the
  metrics then show as collapse, instead of poisoning every number with NaN).

Subsampling (one deterministic policy): quantities whose cost is linear in N (centroids,
spreads, intra/inter, their ratio, Davies-Bouldin, leaving fraction, per-class separation) use
every counted point. The two whose cost grows faster, kNN label consistency (N^2 pairwise
distances) and effective rank (a Gram matrix of min(N, D)^2 from an [N, D] matrix), use at most
:data:`MAX_PAIRWISE_POINTS` points, taken by an even stride over the points sorted by class,
which keeps the class mix and picks the same points for the same input.

Definitions, for counted classes c with n_c points, centroid mu_c (float64 [D]):

- ``spread`` (per class): mean squared distance of its points to mu_c (its variance);
- ``intra``: mean over classes of ``spread``; ``inter``: mean distance between two centroids;
- ``ratio``: sqrt(intra) / inter, scale-free (lower = better separated);
- ``davies_bouldin``: mean over classes of max_j (s_i + s_j) / |mu_i - mu_j|, s = mean
  distance to the centroid (lower = better);
- ``knn_consistency``: fraction of the :data:`KNN` nearest neighbours sharing a point's label;
- ``eff_rank``: exp(entropy of the normalised singular values) of the centred points; the same
  definition as the ``eff_rank`` activation statistic
  (:data:`sentrycam.protocol.signals.EFF_RANK`), which capture computes in torch;
- ``leaving``: fraction of points whose nearest centroid is another class's;
- ``class_separation`` (per class): distance to the nearest other centroid over sqrt(spread)
  (higher = better); ``class_spread``: ``spread`` per class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Classes with fewer counted points than this are left out of every quantity.
MIN_CLASS_POINTS = 2
#: kNN label consistency and effective rank use at most this many points (see module doc).
MAX_PAIRWISE_POINTS = 600
#: Neighbours per point of the kNN label consistency.
KNN = 10
_TINY = 1e-12


@dataclass(frozen=True)
class ClassLayout:
    """The counted points and their classes.

    ``x`` float64 [N, D] and ``labels`` int64 [N]: the counted points; ``classes`` int64 [C]
    (sorted); ``own`` int64 [N]: each point's index into ``classes``; ``centroids`` float64
    [C, D]; ``spread`` float64 [C] (variance); ``mean_distance`` float64 [C] (mean distance to
    the centroid).
    """

    x: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    own: np.ndarray
    centroids: np.ndarray
    spread: np.ndarray
    mean_distance: np.ndarray

    @property
    def separable(self) -> bool:
        """At least two counted classes: quantities between classes are defined."""
        return len(self.classes) >= 2

    def centroid_distances(self) -> np.ndarray:
        """float64 [C, C] distances between centroids."""
        gaps = self.centroids[:, None, :] - self.centroids[None, :, :]
        return np.sqrt((gaps ** 2).sum(-1))

    def intra_inter(self) -> tuple[float, float]:
        """(intra-class variance, inter-class distance); NaN without two counted classes."""
        if not self.separable:
            return math.nan, math.nan
        pairs = np.triu_indices(len(self.classes), k=1)
        return float(self.spread.mean()), float(self.centroid_distances()[pairs].mean())

    def spread_of(self, classes: np.ndarray) -> np.ndarray:
        """float64 [len(classes)]: ``spread`` of each of ``classes``; NaN for one not counted."""
        index = {int(c): i for i, c in enumerate(self.classes)}
        return np.array([self.spread[index[int(c)]] if int(c) in index else np.nan
                         for c in classes], dtype=np.float64)


def training_labels(labels: np.ndarray, heldout: np.ndarray) -> np.ndarray:
    """int64 [N]: ``labels`` int [N] with held-out samples (``heldout`` bool [N]) unlabelled."""
    return np.where(np.asarray(heldout, dtype=bool), -1, np.asarray(labels, dtype=np.int64))


def class_layout(x: np.ndarray, labels: np.ndarray) -> ClassLayout:
    """Count the points of ``x`` float [N, D] with ``labels`` int [N] (see module doc)."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    labels = np.asarray(labels, dtype=np.int64)
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    classes = classes[counts >= MIN_CLASS_POINTS]
    rows = np.isin(labels, classes)
    x, labels = x[rows], labels[rows]
    own = np.searchsorted(classes, labels)
    counts = np.bincount(own, minlength=len(classes)).astype(np.float64)
    members = np.zeros((len(classes), len(labels)))
    members[own, np.arange(len(labels))] = 1.0
    centroids = members @ x / np.maximum(counts, 1)[:, None]
    squared = ((x - centroids[own]) ** 2).sum(1)
    spread = np.bincount(own, squared, minlength=len(classes)) / np.maximum(counts, 1)
    mean_distance = np.bincount(own, np.sqrt(squared), minlength=len(classes)) / np.maximum(
        counts, 1)
    return ClassLayout(x, labels, classes, own, centroids, spread, mean_distance)


def cluster_health(x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(intra-class variance, inter-class distance) of ``x`` float [N, D] with ``labels`` int
    [N]; NaN without two counted classes. The dashboard's cluster-health trajectory."""
    return class_layout(x, labels).intra_inter()


def pairwise_sample(layout: ClassLayout) -> tuple[np.ndarray, np.ndarray]:
    """(points float64 [M, D], labels int64 [M]), M <= :data:`MAX_PAIRWISE_POINTS`: an even
    stride over the counted points sorted by class (deterministic, class mix kept)."""
    x, labels = layout.x, layout.labels
    if len(labels) <= MAX_PAIRWISE_POINTS:
        return x, labels
    order = np.argsort(labels, kind="stable")
    picked = order[np.linspace(0, len(order) - 1, MAX_PAIRWISE_POINTS).astype(np.int64)]
    return x[picked], labels[picked]


def effective_rank(x: np.ndarray) -> float:
    """exp(entropy of the normalised singular values) of the centred float [N, D] matrix: 1 for
    rank one, min(N, D) for a perfectly spread one, 0 for a constant one."""
    centred = np.asarray(x, dtype=np.float64)
    centred = centred - centred.mean(0, keepdims=True)
    # Singular values from the eigenvalues of the smaller Gram matrix: the same values, at a
    # fraction of the cost of an SVD of the [N, D] matrix.
    gram = centred.T @ centred if centred.shape[1] <= centred.shape[0] else centred @ centred.T
    singular = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0.0, None))
    total = singular.sum()
    if total <= 0:
        return 0.0
    p = singular[singular > 1e-9 * total] / total  # rounding noise of the Gram's zeros
    return float(math.exp(-(p * np.log(p)).sum()))


def knn_consistency(x: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of the :data:`KNN` nearest neighbours of each point of ``x`` float [M, D]
    that share its label (``labels`` int [M])."""
    k = min(KNN, len(labels) - 1)
    distances = _squared_distances(x, x)
    np.fill_diagonal(distances, np.inf)
    neighbours = np.argpartition(distances, k - 1, axis=1)[:, :k]
    return float((labels[neighbours] == labels[:, None]).mean())


def class_geometry(x: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None:
    """The metrics of the module doc for ``x`` float [N, D] and ``labels`` int [N], with ``n``
    (points counted) and ``n_pairwise`` (points of the kNN and effective rank); None without
    two counted classes."""
    layout = class_layout(x, labels)
    if not layout.separable:
        return None
    intra, inter = layout.intra_inter()
    centroid_d = layout.centroid_distances()
    off = ~np.eye(len(layout.classes), dtype=bool)
    pair_spread = layout.mean_distance[:, None] + layout.mean_distance[None]
    db_terms = np.where(off, pair_spread / np.maximum(centroid_d, _TINY), 0.0)
    nearest_other = np.where(off, centroid_d, np.inf).min(1)
    nearest_centroid = _squared_distances(layout.x, layout.centroids).argmin(1)
    sample, sample_labels = pairwise_sample(layout)
    return {
        "inter": inter, "intra": intra,
        "ratio": math.sqrt(intra) / max(inter, _TINY),
        "davies_bouldin": float(db_terms.max(1).mean()),
        "knn_consistency": knn_consistency(sample, sample_labels),
        "eff_rank": effective_rank(sample),
        "leaving": float((nearest_centroid != layout.own).mean()),
        "class_separation": {
            int(c): float(nearest_other[i] / max(math.sqrt(layout.spread[i]), _TINY))
            for i, c in enumerate(layout.classes)},
        "class_spread": {int(c): float(v) for c, v in zip(layout.classes, layout.spread)},
        "n": int(len(layout.labels)), "n_pairwise": int(len(sample_labels)),
    }


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 [len(a), len(b)] squared Euclidean distances (never negative), without an
    [len(a), len(b), D] intermediate."""
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T
    return np.clip(squared, 0.0, None)
