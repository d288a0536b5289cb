"""Snapshots sent in row chunks: the bookkeeping of the parts while they arrive.

A large snapshot arrives as several :class:`~sentrycam.protocol.messages.Snapshot` messages,
each a part holding rows ``row_offset .. row_offset + N`` of ``rows_total``, in row order
(consecutive seqs of their run, so the store's sequence rules keep them in order and skip a
part that is sent again). A part's rows go to ``pending_features`` / ``pending_predictions``
and its progress to ``pending_snapshots``; when the last row is in, the rows move to
``features`` / ``predictions`` in the same transaction, so readers, the change feed and
everything after it see a snapshot only whole. A snapshot whose parts stop coming (the
trainer was killed) stays pending, invisible, until the run's next snapshot or its end
discards it.

Every function works inside the caller's open transaction on ``cur``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

import duckdb
import numpy as np

from sentrycam.backend.store import reader
from sentrycam.backend.store.schema import first_row
from sentrycam.protocol.messages import Snapshot

logger = logging.getLogger(__name__)

#: Where a part's rows wait: (features table, predictions table).
PENDING_TABLES = ("pending_features", "pending_predictions")


class PartRefused(ValueError):
    """A part that does not continue its snapshot; the text says how (nothing was stored)."""


@dataclass(frozen=True)
class Pending:
    """A snapshot whose parts are arriving: ``layers`` maps a layer to [dim, nonfinite the
    trainer counted, nonfinite found in the stored float16 rows]; ``outputs``: output names."""

    epoch: int
    rows_total: int
    rows_stored: int
    layers: dict[str, list[int]]
    outputs: list[str]

    def nonfinite(self, layer: str) -> int:
        """The layer's count of NaN/Inf: the trainer's, or more when the cast added some."""
        _dim, counted, stored = self.layers[layer]
        return max(counted, stored)


def pending(cur: duckdb.DuckDBPyConnection, run_id: str, step: int) -> Pending | None:
    row = first_row(cur, "SELECT epoch, rows_total, rows_stored, layers, outputs FROM "
                    "pending_snapshots WHERE run_id = ? AND step = ?", [run_id, step])
    if row is None:
        return None
    return Pending(int(row[0]), int(row[1]), int(row[2]), json.loads(row[3]), json.loads(row[4]))


def discard(cur: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Drop every unfinished snapshot of ``run_id``: parts of it will never come now."""
    steps = [s for (s,) in cur.execute("SELECT step FROM pending_snapshots WHERE run_id = ?",
                                       [run_id]).fetchall()]
    if not steps:
        return
    logger.warning("run %s: dropping the unfinished snapshots of steps %s (their remaining "
                   "row chunks never arrived)", run_id, steps)
    for table in ("pending_snapshots", *PENDING_TABLES):
        cur.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])


def check_part(cur: duckdb.DuckDBPyConnection, m: Snapshot) -> None:
    """Raise :class:`PartRefused` unless ``m`` continues its snapshot where it stands. A
    first part (``row_offset`` 0) always does: it drops the run's unfinished snapshots."""
    if m.row_offset == 0:
        discard(cur, m.run_id)
        return
    where = f"snapshot part of run {m.run_id} step {m.step} at row {m.row_offset}"
    state = pending(cur, m.run_id, int(m.step))
    if state is None:
        raise PartRefused(f"{where}: its first part (row 0) was not stored; the snapshot is "
                          "lost, send the next one whole or from row 0")
    problem = None
    if state.rows_stored != m.row_offset:
        problem = f"rows up to {state.rows_stored} are stored, so the next part starts there"
    elif (state.rows_total, state.epoch) != (m.rows_total, m.epoch):
        problem = (f"rows_total {m.rows_total} and epoch {m.epoch} differ from the first "
                   f"part's {state.rows_total} and {state.epoch}")
    elif ({name: dims[0] for name, dims in state.layers.items()}
          != {name: int(f.shape[1]) for name, f in m.features.items()}
          or sorted(m.outputs) != state.outputs):
        problem = "its layers, feature sizes or outputs differ from the first part's"
    if problem:
        raise PartRefused(f"{where}: {problem}")


def record_part(cur: duckdb.DuckDBPyConnection, m: Snapshot,
                stored_nonfinite: dict[str, int], now: dt.datetime) -> Pending:
    """Count ``m``'s rows (already inserted into :data:`PENDING_TABLES`) as stored; returns
    the snapshot's progress. ``stored_nonfinite``: NaN/Inf per layer in the part's rows."""
    state = pending(cur, m.run_id, int(m.step))
    if state is None:
        state = Pending(int(m.epoch), int(m.rows_total), 0,
                        {name: [int(f.shape[1]), int(m.nonfinite.get(name, 0)), 0]
                         for name, f in m.features.items()}, sorted(m.outputs))
        cur.execute("INSERT INTO pending_snapshots (run_id, step, epoch, rows_total, "
                    "rows_stored, layers, outputs, created_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                    [m.run_id, int(m.step), state.epoch, state.rows_total,
                     json.dumps(state.layers), json.dumps(state.outputs), now])
    for name, count in stored_nonfinite.items():
        state.layers[name][2] += count
    rows = state.rows_stored + len(m.sample_ids)
    cur.execute("UPDATE pending_snapshots SET rows_stored = ?, layers = ? WHERE run_id = ? "
                "AND step = ?", [rows, json.dumps(state.layers), m.run_id, int(m.step)])
    return Pending(state.epoch, state.rows_total, rows, state.layers, state.outputs)


def move_complete(cur: duckdb.DuckDBPyConnection, run_id: str, step: int) -> None:
    """Move a complete snapshot's rows from the pending tables to the ones readers use."""
    params = [run_id, step]
    for table in PENDING_TABLES:
        final = table.removeprefix("pending_")
        cur.execute(f"INSERT INTO {final} SELECT * FROM {table} WHERE run_id = ? AND step = ?",
                    params)
        cur.execute(f"DELETE FROM {table} WHERE run_id = ? AND step = ?", params)
    cur.execute("DELETE FROM pending_snapshots WHERE run_id = ? AND step = ?", params)


def load_complete(cur: duckdb.DuckDBPyConnection, run_id: str, step: int,
                  state: Pending) -> Snapshot:
    """The whole snapshot as stored, rows in sample_id order (for the change feed, whose
    consumers take a snapshot's arrays from its message)."""
    outputs: dict[str, np.ndarray] = {}
    sample_ids = None
    if state.outputs:
        predictions = reader.predictions(cur, run_id, step)
        sample_ids = predictions.pop("sample_id")
        outputs = {name: predictions[name] for name in state.outputs if name in predictions}
    features = {}
    for layer in state.layers:
        ids, features[layer] = reader.features(cur, run_id, step, layer)
        sample_ids = ids if sample_ids is None else sample_ids
    if sample_ids is None:
        sample_ids = np.zeros(0, dtype=np.int64)
    nonfinite = {layer: state.nonfinite(layer) for layer in state.layers}
    return Snapshot(run_id, step, state.epoch, sample_ids, outputs, features, nonfinite)
