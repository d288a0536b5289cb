"""Quality of a projection: how faithful the 2D map is to the features, and over time.

All functions take exact (brute-force, chunked) neighbours, so they are references, not
estimates. ``high`` is float [N, D] features, ``low`` float [N, 2] coords of the same rows.

- :func:`neighbour_preservation`: mean share of each point's k high-D neighbours that are also
  among its k 2D neighbours.
- :func:`trustworthiness`: Venna & Kaski's trustworthiness (penalises 2D neighbours that are
  far in high-D by their high-D rank).
- :func:`temporal_ranking`: per sample, Spearman correlation between how far its features and
  how far its 2D position are, at each snapshot, from the latest snapshot; mean over samples.
- :func:`temporal_neighbour_preservation`: per sample and snapshot, share of its k nearest
  snapshots (of the same sample) in high-D that are also nearest in 2D.
- :func:`prediction_preserving_rate`: share of points whose class, by a classifier head, is the
  same on the features and on the features decoded back from their 2D position.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

CHUNK = 1024


def _sq_distance_rows(points: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Squared distances float64 [len(rows), N] from ``points[rows]`` to all points."""
    block = points[rows]
    sq = (np.sum(block ** 2, 1)[:, None] - 2.0 * block @ points.T
          + np.sum(points ** 2, 1)[None, :])
    return np.maximum(sq, 0.0)


def exact_knn(points: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Indices int64 [R, k] of the k nearest other points of each of ``rows`` (default all),
    nearest first."""
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} points, got {k}")
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    result = np.empty((len(rows), k), np.int64)
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        sq = _sq_distance_rows(points, chunk)
        sq[np.arange(len(chunk)), chunk] = np.inf  # not itself
        nearest = np.argpartition(sq, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(sq, nearest, 1), axis=1, kind="stable")
        result[start:start + len(chunk)] = np.take_along_axis(nearest, order, 1)
    return result


def neighbour_preservation(high: np.ndarray, low: np.ndarray, k: int = 15,
                           rows: np.ndarray | None = None) -> float:
    """Mean |kNN_high(i) ∩ kNN_low(i)| / k over points (over ``rows`` only, when given:
    neighbours are still searched among all points)."""
    _check_pair(high, low)
    high_nn, low_nn = exact_knn(high, k, rows), exact_knn(low, k, rows)
    shared = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(high_nn, low_nn)]
    return float(np.mean(shared) / k)


def trustworthiness(high: np.ndarray, low: np.ndarray, k: int = 15,
                    rows: np.ndarray | None = None) -> float:
    """1 - 2 / (N k (2N - 3k - 1)) * sum over 2D neighbours j of i that are not high-D
    neighbours of (rank of j among i's high-D neighbours - k). With ``rows``, the sum runs over
    those points only and is rescaled to N points (an unbiased estimate)."""
    _check_pair(high, low)
    n = len(high)
    if k >= n / 2:
        raise ValueError(f"trustworthiness needs k < N/2, got k={k} for N={n}")
    high = np.asarray(high, dtype=np.float64)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    low_nn = exact_knn(low, k, rows)
    penalty = 0.0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        sq = _sq_distance_rows(high, chunk)
        local = np.arange(len(chunk))
        sq[local, chunk] = -1.0  # itself ranks 0, before all others
        order = np.argsort(sq, axis=1, kind="stable")
        ranks = np.empty_like(order)
        ranks[local[:, None], order] = np.arange(n)[None, :]  # rank 1 = nearest other point
        neighbour_ranks = np.take_along_axis(ranks, low_nn[start:start + len(chunk)], 1)
        penalty += float(np.sum(np.maximum(neighbour_ranks - k, 0)))
    penalty *= n / len(rows)
    return 1.0 - 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)) * penalty


def temporal_ranking(high_seq: Sequence[np.ndarray], low_seq: Sequence[np.ndarray]) -> float:
    """Mean over samples of the Spearman correlation, across snapshots t < T, between
    ||x_i(t) - x_i(T)|| and ||y_i(t) - y_i(T)|| (T the latest). Rows align across snapshots.
    Samples whose distances are constant in either space are left out."""
    high, low = _stack_sequences(high_seq, low_seq, minimum=3)
    high_d = np.linalg.norm(high[:-1] - high[-1], axis=2)  # [T-1, N]
    low_d = np.linalg.norm(low[:-1] - low[-1], axis=2)
    high_r, low_r = _ranks(high_d), _ranks(low_d)
    high_r -= high_r.mean(0)
    low_r -= low_r.mean(0)
    denominator = np.sqrt(np.sum(high_r ** 2, 0) * np.sum(low_r ** 2, 0))
    valid = denominator > 0
    if not valid.any():
        return float("nan")
    return float(np.mean(np.sum(high_r * low_r, 0)[valid] / denominator[valid]))


def temporal_neighbour_preservation(high_seq: Sequence[np.ndarray],
                                    low_seq: Sequence[np.ndarray], k: int = 5) -> float:
    """Mean over samples and snapshots of |kNN_high ∩ kNN_low| / k, where neighbours are the
    same sample's representations at the other snapshots (needs more than k snapshots)."""
    high, low = _stack_sequences(high_seq, low_seq, minimum=k + 1)
    shares = []
    for sample in range(high.shape[1]):
        high_nn, low_nn = exact_knn(high[:, sample], k), exact_knn(low[:, sample], k)
        shares.extend(len(np.intersect1d(a, b, assume_unique=True)) / k
                      for a, b in zip(high_nn, low_nn))
    return float(np.mean(shares))


def prediction_preserving_rate(features: np.ndarray, reconstructed: np.ndarray,
                               head: Callable[[np.ndarray], np.ndarray]) -> float:
    """Share of rows where argmax ``head(features)`` equals argmax ``head(reconstructed)``;
    ``head`` maps float [N, D] to class scores [N, C]."""
    features, reconstructed = np.asarray(features), np.asarray(reconstructed)
    if features.shape != reconstructed.shape:
        raise ValueError(f"features {features.shape} and reconstructed {reconstructed.shape} "
                         "must have the same shape")
    original = np.argmax(np.asarray(head(features)), axis=1)
    decoded = np.argmax(np.asarray(head(reconstructed)), axis=1)
    return float(np.mean(original == decoded))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks float64 along axis 0 (ties share their mean rank), per column."""
    order = np.argsort(values, axis=0, kind="stable")
    ranks = np.empty(values.shape, np.float64)
    np.put_along_axis(ranks, order, np.arange(len(values), dtype=np.float64)[:, None], 0)
    for column in range(values.shape[1]):  # ties are rare in float data; fix them exactly
        column_values = values[:, column]
        unique, inverse, counts = np.unique(column_values, return_inverse=True,
                                            return_counts=True)
        if len(unique) < len(column_values):
            sums = np.bincount(inverse, weights=ranks[:, column])
            ranks[:, column] = (sums / counts)[inverse]
    return ranks


def _check_pair(high: np.ndarray, low: np.ndarray) -> None:
    if len(high) != len(low):
        raise ValueError(f"high has {len(high)} rows but low has {len(low)}")


def _stack_sequences(high_seq: Sequence[np.ndarray], low_seq: Sequence[np.ndarray],
                     minimum: int) -> tuple[np.ndarray, np.ndarray]:
    if len(high_seq) != len(low_seq):
        raise ValueError(f"{len(high_seq)} high-D snapshots but {len(low_seq)} 2D ones")
    if len(high_seq) < minimum:
        raise ValueError(f"need at least {minimum} snapshots, got {len(high_seq)}")
    high = np.stack([np.asarray(h, dtype=np.float64) for h in high_seq])
    low = np.stack([np.asarray(y, dtype=np.float64) for y in low_seq])
    if high.shape[1] != low.shape[1]:
        raise ValueError("high-D and 2D snapshots must hold the same samples, row-aligned")
    return high, low
