"""Retention: which snapshots keep their feature vectors, and deleting the others' vectors.

Feature vectors are nearly all of a store's bytes (a 500-sample probe of a 512-wide layer is
512 KB per snapshot and layer, as float16); everything else a dashboard, a replay or the audit
engine reads is kept: snapshot rows, predictions, 2D maps, projector checkpoints, quality rows,
scalars, statistics, events and alerts. The projector warm-starts each map from its stored
checkpoint (the previous map's state), never from old feature vectors.

The policy, per run and layer, over its snapshots in step order (ordinal ``o``, 0 = the first;
age ``a`` = how many snapshots are newer):

- the newest ``max_snapshots`` keep their vectors (``a < max_snapshots``);
- older ones form a thinned history of about ``history`` snapshots per doubling of age: in the
  octave ``k`` (ages ``max_snapshots * 2**k`` up to twice that) a snapshot keeps its vectors
  when ``o`` is a multiple of the octave's stride, the power of two nearest below
  ``max_snapshots * 2**k / history``. Strides only grow with age and each divides the next, so
  a snapshot dropped once is never wanted again, and the first snapshot is always kept.

A run of M snapshots keeps about ``max_snapshots + history * log2(M / max_snapshots)`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import duckdb
import numpy as np

Cursor = duckdb.DuckDBPyConnection


@dataclass(frozen=True)
class RetentionSettings:
    """How much the store keeps (see the module's docstring for the policy).

    ``max_snapshots``: per run and layer, the newest this many snapshots keep their feature
    vectors; None keeps every snapshot's. ``history``: older snapshots kept per doubling of
    age (0: none beyond the newest). The server's defaults are in
    :class:`~sentrycam.backend.settings.ServerSettings`; a bare ``Store`` keeps everything.
    """

    max_snapshots: int | None = None
    history: int = 0

    def __post_init__(self) -> None:
        if self.max_snapshots is not None and not _is_count(self.max_snapshots, 1):
            raise ValueError(f"RetentionSettings.max_snapshots must be a positive int or None, "
                             f"got {self.max_snapshots!r}")
        if not _is_count(self.history, 0):
            raise ValueError(f"RetentionSettings.history must be an int >= 0, "
                             f"got {self.history!r}")

    @property
    def keeps_everything(self) -> bool:
        return self.max_snapshots is None

    def describe(self) -> str:
        """The policy in words, for logs and command output."""
        if self.keeps_everything:
            return "every snapshot keeps its feature vectors"
        history = (f" plus about {self.history} older ones per doubling of age"
                   if self.history else "")
        return (f"feature vectors of the newest {self.max_snapshots} snapshots per run and "
                f"layer{history}")


def _is_count(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def kept(count: int, policy: RetentionSettings) -> np.ndarray:
    """Which of ``count`` snapshots (in step order, oldest first) keep their vectors:
    bool [count]."""
    keep = np.ones(count, dtype=bool)
    newest = policy.max_snapshots
    if newest is None or count <= newest:
        return keep
    ordinal = np.arange(count)
    age = count - 1 - ordinal
    old = age >= newest
    keep[old] = False
    if policy.history:
        octave = np.floor(np.log2(age[old] / newest)).astype(np.int64)
        per_kept = np.maximum(1, (newest << octave) // policy.history)
        stride = 1 << (np.floor(np.log2(per_kept)).astype(np.int64))
        keep[old] = ordinal[old] % stride == 0
    return keep


def apply(cur: Cursor, policy: RetentionSettings,
          run_layers: Iterable[tuple[str, str]]) -> int:
    """Delete the feature vectors the policy no longer keeps for each (run_id, layer), inside
    the caller's transaction, and mark those snapshots ``has_features = false``. Returns how
    many (step, layer) snapshots lost their vectors."""
    if policy.keeps_everything:
        return 0
    dropped = 0
    for run_id, layer in sorted(set(run_layers)):
        rows = cur.execute("SELECT step, has_features FROM snapshots WHERE run_id = ? AND "
                           "layer = ? ORDER BY step", [run_id, layer]).fetchall()
        keep = kept(len(rows), policy)
        steps = [step for (step, has), k in zip(rows, keep) if has and not k]
        if not steps:
            continue
        cur.execute("DELETE FROM features WHERE run_id = ? AND layer = ? AND step <= ? "
                    "AND list_contains(?, step)", [run_id, layer, max(steps), steps])
        cur.execute("UPDATE snapshots SET has_features = false WHERE run_id = ? AND layer = ? "
                    "AND list_contains(?, step)", [run_id, layer, steps])
        dropped += len(steps)
    return dropped


def stored_run_layers(cur: Cursor, run_id: str | None = None) -> list[tuple[str, str]]:
    """Every (run_id, layer) with snapshots, of one run or of all."""
    where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
    return [(r, layer) for r, layer in cur.execute(
        f"SELECT DISTINCT run_id, layer FROM snapshots {where} ORDER BY run_id, layer",
        params).fetchall()]
