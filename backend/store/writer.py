"""Messages to rows: one batch of ``(seq, message)`` inside one open transaction.

The store opens and commits the transaction; this module only turns messages into rows. Rows
that arrive in many small messages (scalars, layer statistics, events) are gathered per batch
and inserted once through Arrow, because DuckDB inserts row by row slowly. Feature vectors
go in per snapshot and layer, also through Arrow, as float16 bytes in a BLOB column.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from sentrycam.protocol.messages import (Event, LayerStats, Message, ProbeSet, RunEnd, RunStart,
                                        Scalars, Snapshot, Status)
from sentrycam.backend.store import parts, retention
from sentrycam.backend.store.retention import RetentionSettings
from sentrycam.backend.store.rows import float16_blobs, insert_arrow
from sentrycam.backend.store.schema import PREDICTION_COLUMNS, first_row
from sentrycam.protocol.container import json_safe

logger = logging.getLogger(__name__)

#: Where a whole snapshot's rows go: (features table, predictions table).
SNAPSHOT_TABLES = ("features", "predictions")


def utc_now() -> dt.datetime:
    """Now as a naive UTC datetime (the store's TIMESTAMP columns hold UTC)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def utc_from_epoch(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


def to_json(value: Any) -> str:
    """Strict JSON text: NaN/Inf become "nan"/"inf"/"-inf" (as on the wire), numpy scalars
    their Python value, anything else unknown its ``str()``."""
    return json.dumps(json_safe(value), allow_nan=False, default=str, separators=(",", ":"))


# ----------------------------------------------------------------------------- batch state

@dataclass
class _RunState:
    """What one batch changes in a run's row; written back once at the end. ``exists``: the
    run has a row (one is made before its first stored message)."""

    last_seq: int
    last_step: int | None
    status: str = "running"
    exists: bool = True
    status_values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """A message of a batch that the sequence rules refused (nothing of it stored).

    ``index``: its place in the batch. ``expected_seq``: for a message out of order, the seq
    its run needs next (the sender resends from there); None when the run is finished.
    """

    index: int
    run_id: str
    seq: int
    problem: str
    expected_seq: int | None = None


def order_refusal(index: int, seq: int, run_id: str, last_seq: int,
                  status: str) -> Refusal | None:
    """Why message ``seq`` of ``run_id`` may not be stored after ``last_seq`` (-1: none yet),
    or None when it is the next one. A seq <= ``last_seq`` is a duplicate: the caller skips it
    before asking."""
    if status != "running":
        return Refusal(index, run_id, seq, f"run {run_id} is finished (status {status!r}); it "
                       "takes no more messages")
    if seq != last_seq + 1:
        return Refusal(index, run_id, seq, f"out of order: run {run_id} needs seq "
                       f"{last_seq + 1} next, got {seq}; resend from {last_seq + 1}",
                       expected_seq=last_seq + 1)
    return None


class _Columns:
    """Rows of one table gathered column by column, inserted once per batch."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.data: dict[str, list] = {name: [] for name in schema.names}

    def extend(self, **columns: Iterable) -> None:
        for name, values in columns.items():
            self.data[name].extend(values)

    def table(self) -> pa.Table:
        return pa.table({n: pa.array(v, type=self.schema.field(n).type)
                         for n, v in self.data.items()}, schema=self.schema)


def _pending_tables() -> dict[str, _Columns]:
    s, f64, i64 = pa.string(), pa.float64(), pa.int64()
    return {
        "scalars": _Columns(pa.schema([("run_id", s), ("step", i64), ("name", s),
                                       ("value", f64), ("wall_time", f64)])),
        "layer_stats": _Columns(pa.schema([("run_id", s), ("step", i64), ("layer", s),
                                           ("stat", s), ("value", f64)])),
        "events": _Columns(pa.schema([("run_id", s), ("step", i64), ("wall_time", f64),
                                      ("event", s), ("message", s), ("payload", s)])),
    }


# ----------------------------------------------------------------------------- the batch

class BatchWriter:
    """Writes one batch inside the caller's open transaction on ``cur``.

    ``publish``: the caller passes the stored messages on (the change feed), so a snapshot
    completed by its last row chunk is read back whole for them.
    """

    def __init__(self, cur: duckdb.DuckDBPyConnection, retention: RetentionSettings, *,
                 publish: bool = False) -> None:
        self.cur = cur
        self.retention = retention
        self.publish = publish
        self.now = utc_now()
        self.wall_time = time.time()
        self.runs: dict[str, _RunState] = {}
        self.pending = _pending_tables()
        self.snapshot_layers: set[tuple[str, str]] = set()
        #: The messages this batch stored, in order; a snapshot sent in row chunks once, when
        #: its last part is in (whole when ``publish``, else that last part).
        self.stored: list[Message] = []

    def write(self, batch: Sequence[tuple[int, Message]],
              refused: list[Refusal] | None = None) -> dict[str, int]:
        """Store every message not stored yet; return {run_id: highest committed seq}.

        ``refused`` given, the sequence rules apply (see :func:`order_refusal`) and each
        message they refuse is appended to it; None (a trusted local writer), every seq above
        the run's ``last_seq`` is stored.
        """
        self._load_runs({message.run_id for _, message in batch})
        for index, (seq, message) in enumerate(batch):
            state = self.runs[message.run_id]
            if seq <= state.last_seq:
                continue  # stored by an earlier batch: a replay after a reconnect
            if refused is not None:
                refusal = order_refusal(index, seq, message.run_id, state.last_seq, state.status)
                if refusal is not None:
                    refused.append(refusal)
                    continue
            try:
                self._store(seq, message, state)
            except parts.PartRefused as exc:
                if refused is None:
                    raise
                refused.append(Refusal(index, message.run_id, seq, str(exc)))
        for table, columns in self.pending.items():
            insert_arrow(self.cur, table, columns.table())
        self._apply_retention()
        self._save_runs()
        return {run_id: state.last_seq for run_id, state in self.runs.items()}

    def _store(self, seq: int, message: Message, state: _RunState) -> None:
        is_part = isinstance(message, Snapshot) and not message.is_whole
        if is_part:
            parts.check_part(self.cur, message)  # refused before anything of it is written
        if not state.exists:
            # A message can outrun its RunStart (dropped, or a spool replay); the run must
            # exist for its rows to be listed. RunStart fills the name in later.
            self.cur.execute(
                "INSERT INTO runs (run_id, name, status, created_at, updated_at, last_seq) "
                "VALUES (?, ?, 'running', ?, ?, -1)",
                [message.run_id, message.run_id, self.now, self.now])
            state.exists = True
        if is_part:
            self._snapshot_part(message)
        else:
            self._HANDLERS[type(message)](self, message)
            self.stored.append(message)
        state.last_seq = int(seq)
        step = getattr(message, "step", None)
        if step is not None:
            state.last_step = max(int(step), -1 if state.last_step is None else state.last_step)

    def _load_runs(self, run_ids: set[str]) -> None:
        """Read each run's last seq, last step and status (a run without a row: none yet)."""
        for run_id in sorted(run_ids):
            row = first_row(self.cur, "SELECT last_seq, last_step, status FROM runs "
                            "WHERE run_id = ?", [run_id])
            self.runs[run_id] = (_RunState(last_seq=-1, last_step=None, exists=False)
                                 if row is None else
                                 _RunState(last_seq=int(row[0]), last_step=row[1], status=row[2]))

    def _save_runs(self) -> None:
        for run_id, state in self.runs.items():
            if not state.exists:
                continue  # nothing of it was stored
            values = state.status_values
            self.cur.execute(
                "UPDATE runs SET last_seq = ?, last_step = ?, updated_at = ?, "
                "dropped = coalesce(?, dropped), spooled = coalesce(?, spooled), "
                "capture_overhead = coalesce(?, capture_overhead), "
                "snapshot_every = coalesce(?, snapshot_every) WHERE run_id = ?",
                [state.last_seq, state.last_step, self.now, values.get("dropped"),
                 values.get("spooled"), values.get("capture_overhead"),
                 values.get("snapshot_every"), run_id])

    # ------------------------------------------------------------------ one kind each

    def _run_start(self, m: RunStart) -> None:
        # A second RunStart reopens the run (from a trusted writer only: under the sequence
        # rules a finished run takes nothing new).
        self.cur.execute(
            "UPDATE runs SET name = ?, config = ?, created_at = ?, status = 'running', "
            "ended_at = NULL WHERE run_id = ?",
            [m.name or m.run_id, to_json(dict(m.config)), utc_from_epoch(m.started_at),
             m.run_id])
        self.runs[m.run_id].status = "running"

    def _probe(self, m: ProbeSet) -> None:
        self.cur.execute("DELETE FROM probe_samples WHERE run_id = ?", [m.run_id])
        rows = pa.table({"sample_id": np.asarray(m.sample_ids, dtype=np.int64),
                         "label": np.asarray(m.labels, dtype=np.int64),
                         "split": np.asarray(m.split, dtype=np.uint8)})
        insert_arrow(self.cur, "probe_samples", rows, {"run_id": m.run_id})

    def _scalars(self, m: Scalars) -> None:
        names = list(m.values)
        self.pending["scalars"].extend(
            run_id=[m.run_id] * len(names), step=[int(m.step)] * len(names), name=names,
            value=[float(m.values[k]) for k in names], wall_time=[float(m.wall_time)] * len(names))

    def _layer_stats(self, m: LayerStats) -> None:
        n_layers, n_stats = len(m.layers), len(m.stats)
        count = n_layers * n_stats
        self.pending["layer_stats"].extend(
            run_id=[m.run_id] * count, step=[int(m.step)] * count,
            layer=np.repeat(np.asarray(m.layers, dtype=object), n_stats).tolist(),
            stat=np.tile(np.asarray(m.stats, dtype=object), n_layers).tolist(),
            value=np.asarray(m.values, dtype=np.float64).ravel().tolist())

    def _event(self, m: Event) -> None:
        self.pending["events"].extend(
            run_id=[m.run_id], step=[int(m.step)], wall_time=[float(m.wall_time)],
            event=[m.event], message=[m.message], payload=[to_json(dict(m.payload))])

    def _status(self, m: Status) -> None:
        self.runs[m.run_id].status_values.update(
            dropped=int(m.dropped), spooled=int(m.spooled), capture_overhead=float(m.overhead),
            snapshot_every=int(m.snapshot_every))
        self.pending["scalars"].extend(
            run_id=[m.run_id] * 2, step=[int(m.step)] * 2,
            name=["sentrycam/overhead", "sentrycam/dropped"],
            value=[float(m.overhead), float(m.dropped)], wall_time=[self.wall_time] * 2)

    def _run_end(self, m: RunEnd) -> None:
        self.cur.execute("UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ?",
                         [m.status, self.now, m.run_id])
        self.runs[m.run_id].status = m.status
        parts.discard(self.cur, m.run_id)

    def _snapshot(self, m: Snapshot) -> None:
        """A whole snapshot: its rows go straight where readers find them."""
        parts.discard(self.cur, m.run_id)
        self._drop_earlier_snapshot(m.run_id, int(m.step))
        stored_nonfinite = self._snapshot_rows(m, SNAPSHOT_TABLES)
        for layer, feats in m.features.items():
            nonfinite = max(int(m.nonfinite.get(layer, 0)), stored_nonfinite[layer])
            self._snapshot_row(m.run_id, int(m.step), int(m.epoch), layer, feats.shape,
                               nonfinite)

    def _snapshot_part(self, m: Snapshot) -> None:
        """One row chunk of a snapshot, checked already (see :mod:`.parts`); the last one
        completes it."""
        state = parts.record_part(self.cur, m, self._snapshot_rows(m, parts.PENDING_TABLES),
                                  self.now)
        if state.rows_stored < state.rows_total:
            return
        run_id, step = m.run_id, int(m.step)
        self._drop_earlier_snapshot(run_id, step)
        parts.move_complete(self.cur, run_id, step)
        for layer, (dim, _counted, _stored) in state.layers.items():
            self._snapshot_row(run_id, step, state.epoch, layer, (state.rows_total, dim),
                               state.nonfinite(layer))
        self.stored.append(parts.load_complete(self.cur, run_id, step, state)
                           if self.publish else m)

    def _snapshot_row(self, run_id: str, step: int, epoch: int, layer: str,
                      shape: tuple[int, int], nonfinite: int) -> None:
        self.cur.execute(
            "INSERT INTO snapshots (run_id, step, epoch, layer, n, dim, nonfinite, "
            "has_features, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, true, ?)",
            [run_id, step, epoch, layer, shape[0], shape[1], nonfinite, self.now])
        self.snapshot_layers.add((run_id, layer))

    def _snapshot_rows(self, m: Snapshot, tables: tuple[str, str]) -> dict[str, int]:
        """Insert ``m``'s feature and prediction rows into ``tables``; returns each layer's
        NaN/Inf count in its stored float16 rows."""
        key = {"run_id": m.run_id, "step": int(m.step)}
        sample_ids = pa.array(np.asarray(m.sample_ids, dtype=np.int64))
        stored_nonfinite = {}
        for layer, raw in m.features.items():
            feats = np.asarray(raw)
            if feats.dtype != np.float16:
                feats = feats.astype(np.float16)
            # The agent counts before its float16 cast; the cast itself can overflow to Inf.
            stored_nonfinite[layer] = int(feats.size - np.count_nonzero(np.isfinite(feats)))
            rows = pa.table({"sample_id": sample_ids, "vec": float16_blobs(feats)})
            insert_arrow(self.cur, tables[0], rows, {**key, "layer": layer})
        if m.outputs:
            insert_arrow(self.cur, tables[1], self._prediction_rows(m, sample_ids), key)
        return stored_nonfinite

    def _prediction_rows(self, m: Snapshot, sample_ids: pa.Array) -> pa.Table:
        n = len(sample_ids)
        unknown = sorted(set(m.outputs) - set(PREDICTION_COLUMNS))
        if unknown:
            logger.debug("run %s step %s: outputs %s have no column and are not stored",
                         m.run_id, m.step, unknown)
        columns = {"sample_id": sample_ids}
        for name, arrow_type in PREDICTION_COLUMNS.items():
            if name in m.outputs:
                values = np.asarray(m.outputs[name], dtype=arrow_type.to_pandas_dtype())
                columns[name] = pa.array(values, type=arrow_type)
            else:
                columns[name] = pa.nulls(n, type=arrow_type)
        return pa.table(columns)

    def _drop_earlier_snapshot(self, run_id: str, step: int) -> None:
        """A second snapshot at one step (say the epoch-end one on an every-N step) replaces
        the first, so that each (run, step, layer) has one set of rows. The projector's output
        for the first one goes too: it no longer matches the stored features."""
        params = [run_id, step]
        seen = first_row(
            self.cur, "SELECT (SELECT count(*) FROM snapshots WHERE run_id = ? AND step = ?) "
            "+ (SELECT count(*) FROM predictions WHERE run_id = ? AND step = ?)",
            params + params)[0]
        if seen:
            for table in ("snapshots", "features", "predictions", "embeddings",
                          "projection_quality"):
                self.cur.execute(f"DELETE FROM {table} WHERE run_id = ? AND step = ?", params)

    def _apply_retention(self) -> None:
        retention.apply(self.cur, self.retention, self.snapshot_layers)

    _HANDLERS = {
        RunStart: _run_start, ProbeSet: _probe, Scalars: _scalars, LayerStats: _layer_stats,
        Snapshot: _snapshot, Event: _event, Status: _status, RunEnd: _run_end,
    }
