"""Checks of the arrays handed to the projector, with errors that say what to do."""

from __future__ import annotations

import numpy as np


def check_snapshot(features: object, ids: object, labels: object, k: int,
                   expected_dim: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate one snapshot; returns (features float32 [N, D], ids int64 [N], labels or None).

    Raises ValueError for a non-2D feature array, ids that are not 1-D integers, mismatched
    lengths, duplicate ids, NaN/Inf features, fewer than ``k`` points, or a feature dimension
    other than ``expected_dim`` (the dimension of earlier snapshots of this projector).
    """
    features = np.asarray(features)
    ids_array = np.asarray(ids)
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array [N, D], got shape {features.shape}")
    if ids_array.ndim != 1:
        raise ValueError(f"ids must be a 1-D array [N], got shape {ids_array.shape}")
    if len(ids_array) and not np.issubdtype(ids_array.dtype, np.integer):
        raise ValueError(f"ids must be integers (stable probe sample ids), got {ids_array.dtype}")
    if len(features) != len(ids_array):
        raise ValueError(f"features has {len(features)} rows but ids has {len(ids_array)}: "
                         "pass one id per feature row")
    unique = np.unique(ids_array)
    if len(unique) != len(ids_array):
        raise ValueError(f"ids contain {len(ids_array) - len(unique)} duplicate(s), e.g. "
                         f"{_first_duplicate(ids_array)}: each sample needs its own id")
    if len(features) < k:
        raise ValueError(f"a snapshot needs at least k={k} points (the neighbourhood size), "
                         f"got {len(features)}: use a larger probe set or a smaller k")
    if expected_dim is not None and features.shape[1] != expected_dim:
        raise ValueError(f"feature dimension changed from {expected_dim} to {features.shape[1]}"
                         " between snapshots: use one Projector per layer")
    features = features.astype(np.float32, copy=False)
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features).all(axis=1)).sum())
        raise ValueError(f"features contain NaN or Inf in {bad} row(s): this snapshot cannot be"
                         " projected (drop or repair those rows first)")
    return features, ids_array.astype(np.int64), _check_labels(labels, len(features))


def _check_labels(labels: object, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) like ids, got {labels.shape}")
    return labels


def _first_duplicate(ids: np.ndarray) -> int:
    values, counts = np.unique(ids, return_counts=True)
    return int(values[counts > 1][0])
