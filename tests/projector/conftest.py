"""Shared data of the projector tests: small drifting clusters with stable ids."""

from __future__ import annotations

import numpy as np
import pytest


def drifting_clusters(n: int = 240, dim: int = 16, n_snapshots: int = 10, seed: int = 0):
    """Snapshots (features float32 [n, dim], labels int64 [n]) of 4 clusters drifting slowly."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    centres = rng.normal(size=(4, dim)) * 4.0
    offsets = rng.normal(size=(n, dim))
    snapshots = []
    for _ in range(n_snapshots):
        centres = centres + rng.normal(size=centres.shape) * 0.2
        offsets = offsets + rng.normal(size=offsets.shape) * 0.05
        snapshots.append(((centres[labels] + offsets).astype(np.float32), labels))
    return snapshots


@pytest.fixture(scope="session")
def snapshots():
    return drifting_clusters()
