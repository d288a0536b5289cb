"""Density-guided sampling: how many probe points the graph needs, and which ones.

Relative density (SPEC 5.1): r(rho) is the mean distance from a point to its 20th neighbour
within a random subset holding a fraction rho of the points; D(rho) = r(1) / r(rho) <= 1. The
graph is built on the smallest rho whose secant slope (1 - D(rho)) / (1 - rho) is at most 0.25
(the "topology tipping point": thinning further loses neighbourhoods faster than it saves
work), else on the largest fraction allowed. Improvements on the original rule: the sample is
stratified by class so small classes keep their share, the sparsest points (outliers, thin
classes) are always kept, and the rest is chosen by a fixed per-id priority, so the same ids
stay in the sample from one snapshot to the next and the graph can be reused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DENSITY_K = 20
TIPPING_SLOPE = 0.25
DEFAULT_FRACTIONS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class SamplingChoice:
    """``fraction`` chosen; ``curve`` {rho: D(rho)} measured; ``rows`` int64 [M] sampled rows."""

    fraction: float
    curve: dict[float, float]
    rows: np.ndarray


def _sq_distances(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Squared euclidean distances [Q, P] of float32 queries [Q, D] to points [P, D]."""
    return (np.sum(queries ** 2, 1)[:, None] - 2.0 * queries @ points.T
            + np.sum(points ** 2, 1)[None, :])


def relative_density_curve(features: np.ndarray, rng: np.random.Generator,
                           fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
                           k: int = DENSITY_K, n_queries: int = 256) -> dict[float, float]:
    """D(rho) for each ``rho`` in ``fractions`` whose subset holds more than ``k`` points.

    Subsets are nested prefixes of one random permutation and the queries lie in the smallest
    one, so each r(rho) uses the same queries and one [Q, N] distance matrix serves all.
    """
    n = len(features)
    usable = [rho for rho in fractions if int(round(rho * n)) > k]
    if not usable:
        return {}
    order = rng.permutation(n)
    points = features[order].astype(np.float32)
    queries = points[:min(n_queries, int(round(usable[0] * n)))]
    sq = _sq_distances(queries, points)
    # Column j of row q is the query itself when j == q: the partition index k skips it.
    r_full = _mean_kth(sq, n, k)
    return {rho: float(r_full / max(_mean_kth(sq, int(round(rho * n)), k), 1e-12))
            for rho in usable}


def _mean_kth(sq: np.ndarray, m: int, k: int) -> float:
    """Mean distance to the k-th neighbour (self excluded) within the first ``m`` columns."""
    kth = np.partition(sq[:, :m], k, axis=1)[:, k]
    return float(np.mean(np.sqrt(np.maximum(kth, 0.0))))


def tipping_fraction(curve: dict[float, float], max_fraction: float = 1.0,
                     slope: float = TIPPING_SLOPE) -> float:
    """Smallest rho <= ``max_fraction`` with (1 - D) / (1 - rho) <= ``slope``, else the largest."""
    allowed = sorted(rho for rho in curve if rho <= max_fraction)
    for rho in allowed:
        if rho >= 1.0 or (1.0 - curve[rho]) / (1.0 - rho) <= slope:
            return rho
    return allowed[-1] if allowed else max_fraction


def id_priority(ids: np.ndarray, seed: int) -> np.ndarray:
    """A fixed pseudo-random priority float64 [N] per probe id (same id, same priority)."""
    mixed = (ids.astype(np.uint64) ^ np.uint64(seed * 0x9E3779B97F4A7C15 % 2 ** 64))
    mixed = (mixed ^ (mixed >> np.uint64(31))) * np.uint64(0xBF58476D1CE4E5B9)
    mixed = (mixed ^ (mixed >> np.uint64(29))) * np.uint64(0x94D049BB133111EB)
    return (mixed >> np.uint64(11)).astype(np.float64) / 2.0 ** 53


def sparsity(features: np.ndarray, rng: np.random.Generator, k: int = DENSITY_K,
             n_reference: int = 512) -> np.ndarray:
    """Distance float64 [N] of every point to its k-th neighbour among a random reference set
    (a cheap local sparsity score: large = low density)."""
    n = len(features)
    reference = features[rng.choice(n, size=min(n, n_reference), replace=False)]
    k = min(k, len(reference) - 1)
    sq = _sq_distances(features.astype(np.float32), reference.astype(np.float32))
    return np.sqrt(np.maximum(np.partition(sq, k, axis=1)[:, k], 0.0))


def stratified_sample(ids: np.ndarray, labels: np.ndarray | None, fraction: float,
                      sparse_score: np.ndarray, seed: int, keep_sparsest: float = 0.1,
                      min_per_class: int = DENSITY_K) -> np.ndarray:
    """Rows int64 [M] (sorted) of a ``fraction`` sample: per class, the sparsest
    ``keep_sparsest`` share of the quota first, then the highest id priorities."""
    if fraction >= 1.0:
        return np.arange(len(ids))
    classes = np.zeros(len(ids), np.int64) if labels is None else np.asarray(labels)
    priority = id_priority(ids, seed)
    chosen: list[np.ndarray] = []
    for value in np.unique(classes):
        members = np.flatnonzero(classes == value)
        quota = min(len(members), max(min_per_class, int(np.ceil(fraction * len(members)))))
        n_sparse = int(np.ceil(keep_sparsest * quota))
        sparsest = members[np.argsort(-sparse_score[members], kind="stable")[:n_sparse]]
        rest = np.setdiff1d(members, sparsest)
        rest = rest[np.argsort(-priority[rest], kind="stable")[:quota - n_sparse]]
        chosen.extend((sparsest, rest))
    return np.sort(np.concatenate(chosen))


def choose_sample(features: np.ndarray, ids: np.ndarray, labels: np.ndarray | None,
                  rng: np.random.Generator, seed: int, min_points: int,
                  max_fraction: float = 1.0) -> SamplingChoice:
    """Measure the density curve, pick the tipping fraction, draw the stratified sample.

    The fraction is raised so the sample holds at least ``min_points`` rows (the graph needs
    more points than its neighbourhood size).
    """
    n = len(features)
    curve = relative_density_curve(features, rng)
    fraction = tipping_fraction(curve, max_fraction)
    fraction = max(fraction, min(1.0, min_points / n))
    if fraction >= 1.0:
        return SamplingChoice(1.0, curve, np.arange(n))
    rows = stratified_sample(ids, labels, fraction, sparsity(features, rng), seed)
    return SamplingChoice(len(rows) / n, curve, rows)
