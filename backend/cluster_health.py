"""Cluster health of one 2D map: how tight the classes are against how far apart they sit.

The dashboard's "cluster health trajectory" plots the first two numbers snapshot after
snapshot: healthy training moves down (tighter classes) and right (classes further apart);
collapse moves towards the origin. The per-class spread feeds its class x snapshot heatmap.
"""

from __future__ import annotations

import numpy as np


def class_spreads(coords: np.ndarray, labels: np.ndarray,
                  classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(spread float64 [C], centroid float64 [C, 2]) of each of ``classes`` among points
    ``coords`` float [N, 2] labelled ``labels`` int [N]. Spread: the mean squared distance of
    a class's points to their centroid. NaN for a class without points."""
    coords = np.asarray(coords, dtype=np.float64)
    labels = np.asarray(labels)
    spread = np.full(len(classes), np.nan)
    centroid = np.full((len(classes), 2), np.nan)
    for i, label in enumerate(classes):
        members = coords[labels == label]
        if len(members):
            centroid[i] = members.mean(axis=0)
            spread[i] = np.mean(np.sum((members - centroid[i]) ** 2, axis=1))
    return spread, centroid


def cluster_health(coords: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(intra-class variance, inter-class distance) of points ``coords`` float [N, 2] with
    ``labels`` int [N] (negative: unknown, left out).

    Intra-class variance: the mean over classes of their spread (see :func:`class_spreads`).
    Inter-class distance: the mean distance between the centroids of two different classes.
    NaN where fewer than two classes have points.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels[labels >= 0])
    if len(classes) < 2:
        return float("nan"), float("nan")
    spread, centroid = class_spreads(coords, labels, classes)
    gaps = np.linalg.norm(centroid[:, None, :] - centroid[None, :, :], axis=-1)
    pairs = np.triu_indices(len(classes), k=1)
    return float(np.mean(spread)), float(np.mean(gaps[pairs]))
