"""Cluster health of one 2D map: how tight the classes are against how far apart they sit.

The dashboard's "cluster health trajectory" plots these two numbers snapshot after snapshot:
healthy training moves down (tighter classes) and right (classes further apart); collapse
moves towards the origin.
"""

from __future__ import annotations

import numpy as np


def cluster_health(coords: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(intra-class variance, inter-class distance) of points ``coords`` float [N, 2] with
    ``labels`` int [N] (negative: unknown, left out).

    Intra-class variance: the mean, over classes, of the mean squared distance of a class's
    points to their centroid. Inter-class distance: the mean distance between the centroids
    of two different classes. NaN where fewer than two classes have points.
    """
    coords = np.asarray(coords, dtype=np.float64)
    labels = np.asarray(labels)
    known = labels >= 0
    coords, labels = coords[known], labels[known]
    classes = np.unique(labels)
    if len(classes) < 2:
        return float("nan"), float("nan")
    centroids = np.stack([coords[labels == c].mean(axis=0) for c in classes])
    spreads = [np.mean(np.sum((coords[labels == c] - centroids[i]) ** 2, axis=1))
               for i, c in enumerate(classes)]
    gaps = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=-1)
    pairs = np.triu_indices(len(classes), k=1)
    return float(np.mean(spreads)), float(np.mean(gaps[pairs]))
