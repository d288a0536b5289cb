"""Finding probe ids among the rows of a snapshot (vectorised, no Python loops)."""

from __future__ import annotations

import numpy as np


def lookup_rows(ids: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``query`` ids (any shape, int) in ``ids`` int64 [N] (unique).

    Returns (rows int64 like ``query``, found bool like ``query``); rows of ids not found are 0.
    """
    query = np.asarray(query, dtype=np.int64)
    if len(ids) == 0:
        return np.zeros(query.shape, np.int64), np.zeros(query.shape, bool)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    positions = np.clip(np.searchsorted(sorted_ids, query), 0, len(ids) - 1)
    found = sorted_ids[positions] == query
    return np.where(found, order[positions], 0), found
