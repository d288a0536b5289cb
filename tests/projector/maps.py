"""What several projector tests share: a step budget without a time limit, and a check that
each point of a map sits with its own class."""

from __future__ import annotations

import numpy as np

# A step budget and no time limit: the maps (and the quality bounds of the tests) do not depend
# on how busy the machine is.
FAST = dict(first_steps=120, steps=20, time_limit_s=None, first_time_limit_s=None,
            train=dict(edge_batch=512, temporal_batch=128))


def nearest_centroid_accuracy(coords: np.ndarray, labels: np.ndarray) -> float:
    """Share of points [N, 2] nearest to their own class's centroid (labels int [N])."""
    classes = np.unique(labels)
    centroids = np.stack([coords[labels == c].mean(0) for c in classes])
    nearest = np.argmin(((coords[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return float(np.mean(classes[nearest] == labels))
