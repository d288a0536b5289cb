"""The temporal part of the spatio-temporal graph: each sample linked to its own past.

Probe ids are stable, so a sample of snapshot t is linked to the same id at the log-spaced
earlier snapshots t-1, t-2, t-4, ... . The earlier point keeps the 2D position it was drawn at
(its anchor); how far it may move is a margin from how far its features drifted between the two
snapshots, measured in units of the typical neighbour distance and clipped to [0.1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sentrycam.projector.ids import lookup_rows

DEFAULT_OFFSETS = (1, 2, 4)
MARGIN_RANGE = (0.1, 1.0)


@dataclass(frozen=True)
class PastSnapshot:
    """What the temporal edges need of one earlier snapshot: ``index`` (update count),
    ``ids`` int64 [N], ``features`` float16 [N, D] (scaled as the network saw them), ``coords``
    float32 [N, 2] (where they were drawn)."""

    index: int
    ids: np.ndarray
    features: np.ndarray
    coords: np.ndarray


@dataclass(frozen=True)
class TemporalEdges:
    """Edges from rows of the current snapshot to earlier feature vectors: ``current`` int64
    [T], ``earlier`` float32 [T, D], ``anchors`` float32 [T, 2], ``margins`` float32 [T],
    ``weights`` float32 [T] (exp(-drift): a sample that moved far is pulled back less)."""

    current: np.ndarray
    earlier: np.ndarray
    anchors: np.ndarray
    margins: np.ndarray
    weights: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> "TemporalEdges":
        return cls(np.zeros(0, np.int64), np.zeros((0, dim), np.float32),
                   np.zeros((0, 2), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.float32))


def linked_snapshots(past: list[PastSnapshot], index: int,
                     offsets: tuple[int, ...] = DEFAULT_OFFSETS) -> list[PastSnapshot]:
    """The earlier snapshots at ``index - offset`` for each offset (those still kept)."""
    wanted = {index - offset for offset in offsets}
    return [snapshot for snapshot in past if snapshot.index in wanted]


def temporal_edges(ids: np.ndarray, features: np.ndarray, past: list[PastSnapshot],
                   local_scale: float) -> TemporalEdges:
    """Temporal edges of the current snapshot (``ids`` int64 [N], scaled ``features`` float32
    [N, D]) to each snapshot of ``past``; ``local_scale`` > 0 is the typical neighbour distance."""
    parts = []
    for snapshot in past:
        rows, found = lookup_rows(ids, snapshot.ids)
        current = rows[found]
        earlier = snapshot.features[found].astype(np.float32)
        drift = np.linalg.norm(features[current] - earlier, axis=1) / max(local_scale, 1e-12)
        margins = np.clip(drift, *MARGIN_RANGE).astype(np.float32)
        parts.append(TemporalEdges(current, earlier, snapshot.coords[found], margins,
                                   np.exp(-drift).astype(np.float32)))
    if not parts:
        return TemporalEdges.empty(features.shape[1])
    return TemporalEdges(*(np.concatenate([getattr(p, name) for p in parts])
                           for name in ("current", "earlier", "anchors", "margins", "weights")))


def keep_needed(past: list[PastSnapshot], index: int,
                offsets: tuple[int, ...] = DEFAULT_OFFSETS) -> list[PastSnapshot]:
    """The snapshots a later update (index + 1 onwards) can still link to."""
    oldest = index + 1 - max(offsets)
    return [snapshot for snapshot in past if snapshot.index >= oldest]
