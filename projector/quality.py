"""Quality metrics of a live sequence of maps, computed after the coords are out.

:class:`QualityWindow` keeps the last few snapshots of one layer (features as float16) and
turns the newest into the metrics the store keeps per (run, layer, step): ``nn@15``,
``trust@15``, ``temporal_ranking`` (from 3 snapshots on), ``temporal_nn@5`` (from 6 on).
Temporal metrics use the ids present in every snapshot of the window. The metric names are
built by the functions below, the one place that spells them.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from sentrycam.projector import metrics
from sentrycam.projector.graph import DEFAULT_K
from sentrycam.projector.ids import lookup_rows

DEFAULT_TEMPORAL_K = 5
TEMPORAL_RANKING = "temporal_ranking"


def neighbour_metric(k: int) -> str:
    """Name of neighbour preservation at ``k`` (``nn@15``)."""
    return f"nn@{k}"


def trust_metric(k: int) -> str:
    """Name of trustworthiness at ``k`` (``trust@15``)."""
    return f"trust@{k}"


def temporal_neighbour_metric(k: int) -> str:
    """Name of temporal neighbour preservation at ``k`` (``temporal_nn@5``)."""
    return f"temporal_nn@{k}"


class QualityWindow:
    """The last ``size`` snapshots (ids int64 [N], features float16 [N, D], coords [N, 2])."""

    def __init__(self, size: int = 8, k: int = DEFAULT_K, temporal_k: int = DEFAULT_TEMPORAL_K,
                 max_rows: int = 1000, max_temporal_samples: int = 300, seed: int = 0) -> None:
        self.snapshots: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=size)
        self.k, self.temporal_k = k, temporal_k
        self.max_rows, self.max_temporal_samples = max_rows, max_temporal_samples
        self.rng = np.random.default_rng(seed)

    def add(self, ids: np.ndarray, features: np.ndarray, coords: np.ndarray) -> None:
        self.snapshots.append((np.asarray(ids, np.int64), np.asarray(features, np.float16),
                               np.asarray(coords, np.float32)))

    def metrics(self) -> dict[str, float]:
        """Metrics of the newest snapshot {name: value}; those that need more data are absent."""
        ids, features, coords = self.snapshots[-1]
        features = features.astype(np.float32)
        n = len(ids)
        result: dict[str, float] = {}
        if n > 2 * self.k:
            rows = (self.rng.choice(n, self.max_rows, replace=False) if n > self.max_rows
                    else None)
            result[neighbour_metric(self.k)] = metrics.neighbour_preservation(
                features, coords, self.k, rows)
            result[trust_metric(self.k)] = metrics.trustworthiness(features, coords, self.k,
                                                                   rows)
        highs, lows = self._aligned(self.max_temporal_samples)
        if len(highs) >= 3 and highs[0].shape[0] > 0:
            value = metrics.temporal_ranking(highs, lows)
            if np.isfinite(value):
                result[TEMPORAL_RANKING] = value
        if len(highs) > self.temporal_k and highs[0].shape[0] > 0:
            result[temporal_neighbour_metric(self.temporal_k)] = (
                metrics.temporal_neighbour_preservation(highs, lows, self.temporal_k))
        return result

    def _aligned(self, max_samples: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Features and coords of the ids present in every kept snapshot (at most
        ``max_samples`` of them), row-aligned across snapshots."""
        common = self.snapshots[0][0]
        for ids, _, _ in list(self.snapshots)[1:]:
            common = np.intersect1d(common, ids)
        if len(common) > max_samples:
            common = np.sort(self.rng.choice(common, max_samples, replace=False))
        highs, lows = [], []
        for ids, features, coords in self.snapshots:
            rows, _ = lookup_rows(ids, common)
            highs.append(features[rows].astype(np.float32))
            lows.append(coords[rows])
        return highs, lows
