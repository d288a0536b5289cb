"""Synthetic probe features for the benchmarks: a drifting mixture of clusters.

Shared by ``projector_vs_umap.py`` (a few fast-moving snapshots) and ``dashboard_latency.py``
(a long, slowly drifting stream, as a model's features move between two snapshots).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


def drifting_mixture(n: int, dim: int, n_snapshots: int | None, seed: int, *,
                     drift: float = 0.25, jitter: float = 0.15, tighten: float = 0.08,
                     min_spread: float = 0.3) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Snapshots (features float32 [n, dim], labels int64 [n]) of 10 clusters, each a 10-d
    subspace blob, whose centres drift (``drift`` per snapshot), whose points move within their
    blob (``jitter``) and whose blobs tighten (spread 1.5, less ``tighten`` per snapshot, at
    least ``min_spread``) over time, like features during training. ``n_snapshots`` None: an
    endless stream."""
    rng = np.random.default_rng(seed)
    n_clusters, intrinsic = 10, 10
    labels = rng.integers(0, n_clusters, n)
    centres = rng.normal(size=(n_clusters, dim)) * 1.5
    bases = rng.normal(size=(n_clusters, intrinsic, dim)) / np.sqrt(intrinsic)
    latent = rng.normal(size=(n, intrinsic))
    noise = rng.normal(size=(n, dim)) * 0.15
    t = 0
    while n_snapshots is None or t < n_snapshots:
        centres = centres + rng.normal(size=centres.shape) * drift
        latent = latent + rng.normal(size=latent.shape) * jitter
        spread = max(1.5 - tighten * t, min_spread)
        features = centres[labels] + spread * np.einsum("ni,nid->nd", latent, bases[labels])
        yield (features + noise).astype(np.float32), labels
        t += 1
