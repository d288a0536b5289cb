"""Messages to rows: one batch of ``(seq, message)`` inside one open transaction.

The store opens and commits the transaction; this module only turns messages into rows. Every
statement costs a fixed overhead, so a batch costs a few statements per table, not per message:
rows of many small messages (scalars, layer statistics, events) and of whole snapshots
(features, as float16 bytes in a BLOB column, predictions, snapshot rows) are gathered per batch
and inserted once per table through Arrow; the runs a batch touches are updated with one
statement, and read with one query only when the store does not remember them from an earlier
batch (:class:`RunRecord`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from sentrycam.protocol.messages import (Event, LayerStats, Message, ProbeSet, RunEnd, RunStart,
                                        ScalarSeries, Scalars, Snapshot, Status)
from sentrycam.backend.store import parts, retention
from sentrycam.backend.store.retention import RetentionSettings
from sentrycam.backend.store.rows import Columns, Pieces, execute_with_rows, insert_arrow
from sentrycam.backend.store.schema import first_row
from sentrycam.backend.store.snapshot_rows import index_rows, snapshot_rows
from sentrycam.protocol.container import json_safe

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

    def record(self) -> RunRecord:
        return RunRecord(self.last_seq, self.last_step, self.status)


@dataclass(frozen=True)
class RunRecord:
    """What the sequence rules need of a stored run between batches: its last stored seq,
    last step and status (as committed in its ``runs`` row)."""

    last_seq: int
    last_step: int | None
    status: str


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


def _pending_tables() -> dict[str, Columns]:
    s, f64, i64 = pa.string(), pa.float64(), pa.int64()
    return {
        "scalars": Columns(pa.schema([("run_id", s), ("step", i64), ("name", s),
                                      ("value", f64), ("wall_time", f64)])),
        "layer_stats": Columns(pa.schema([("run_id", s), ("step", i64), ("layer", s),
                                          ("stat", s), ("value", f64)])),
        "events": Columns(pa.schema([("run_id", s), ("step", i64), ("wall_time", f64),
                                     ("event", s), ("message", s), ("payload", s)])),
    }


#: The runs table's columns that a batch writes back (see :meth:`BatchWriter._save_runs`).
_RUN_UPDATES = pa.schema([("run_id", pa.string()), ("last_seq", pa.int64()),
                          ("last_step", pa.int64()), ("dropped", pa.int64()),
                          ("spooled", pa.int64()), ("capture_overhead", pa.float64()),
                          ("snapshot_every", pa.int64())])


# ----------------------------------------------------------------------------- the batch

class BatchWriter:
    """Writes one batch inside the caller's open transaction on ``cur``.

    ``publish``: the caller passes the stored messages on (the change feed), so a snapshot
    completed by its last row chunk is read back whole for them. ``known``: the committed
    :class:`RunRecord` of runs the caller remembers (they are not read again); after the
    commit, :meth:`records` gives what to remember next.
    """

    def __init__(self, cur: duckdb.DuckDBPyConnection, retention: RetentionSettings, *,
                 publish: bool = False, known: Mapping[str, RunRecord] | None = None) -> None:
        self.cur = cur
        self.known = known or {}
        self.retention = retention
        self.publish = publish
        self.now = utc_now()
        self.wall_time = time.time()
        self.runs: dict[str, _RunState] = {}
        self.pending = _pending_tables()
        #: Rows of whole snapshots by (run_id, step): features, predictions, snapshots.
        self.snapshot_pieces = Pieces()
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
        for table, rows in self.snapshot_pieces.tables().items():
            insert_arrow(self.cur, table, rows)
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
        """Each run's last seq, last step and status: remembered ones from ``known``, the
        others read with one query (a run without a row: none yet)."""
        for run_id in run_ids & self.known.keys():
            record = self.known[run_id]
            self.runs[run_id] = _RunState(record.last_seq, record.last_step, record.status)
        unknown = sorted(run_ids - self.known.keys())
        if not unknown:
            return
        rows = self.cur.execute("SELECT run_id, last_seq, last_step, status FROM runs "
                                "WHERE list_contains(?, run_id)", [unknown]).fetchall()
        found = {row[0]: row[1:] for row in rows}
        for run_id in unknown:
            row = found.get(run_id)
            self.runs[run_id] = (_RunState(last_seq=-1, last_step=None, exists=False)
                                 if row is None else
                                 _RunState(last_seq=int(row[0]), last_step=row[1], status=row[2]))

    def records(self) -> dict[str, RunRecord]:
        """The :class:`RunRecord` of every run of the batch that has a row (valid once the
        batch is committed)."""
        return {run_id: state.record() for run_id, state in self.runs.items() if state.exists}

    def _save_runs(self) -> None:
        """Write every stored run's new last seq, last step and status values back, in one
        statement (a value a batch did not receive keeps the stored one)."""
        saved = {run_id: state for run_id, state in self.runs.items() if state.exists}
        if not saved:
            return
        columns: dict[str, list] = {name: [] for name in _RUN_UPDATES.names}
        for run_id, state in saved.items():
            values = {"run_id": run_id, "last_seq": state.last_seq,
                      "last_step": state.last_step, **state.status_values}
            for name, column in columns.items():
                column.append(values.get(name))
        execute_with_rows(
            self.cur, "UPDATE runs SET last_seq = i.last_seq, last_step = i.last_step, "
            "updated_at = ?, dropped = coalesce(i.dropped, runs.dropped), "
            "spooled = coalesce(i.spooled, runs.spooled), "
            "capture_overhead = coalesce(i.capture_overhead, runs.capture_overhead), "
            "snapshot_every = coalesce(i.snapshot_every, runs.snapshot_every) "
            "FROM {rows} AS i WHERE runs.run_id = i.run_id",
            pa.table(columns, schema=_RUN_UPDATES), [self.now])

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

    def _scalar_series(self, m: ScalarSeries) -> None:
        steps, names, values, wall_times = m.long_rows()
        self.pending["scalars"].extend(
            run_id=[m.run_id] * len(names), step=steps.tolist(), name=names,
            value=values.tolist(), wall_time=wall_times.tolist())

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
        """A whole snapshot: its rows join the batch's rows for the tables readers use."""
        run_id, step = m.run_id, int(m.step)
        parts.discard(self.cur, run_id)
        self._drop_earlier_snapshot(run_id, step)
        stored_nonfinite, rows = snapshot_rows(m)
        for index, table in rows:
            self.snapshot_pieces.add((run_id, step), SNAPSHOT_TABLES[index], table)
        self.snapshot_pieces.add((run_id, step), "snapshots", self._index_rows(
            run_id, step, int(m.epoch),
            {layer: (*feats.shape, max(int(m.nonfinite.get(layer, 0)), stored_nonfinite[layer]))
             for layer, feats in m.features.items()}))

    def _snapshot_part(self, m: Snapshot) -> None:
        """One row chunk of a snapshot, checked already (see :mod:`.parts`); the last one
        completes it. Parts are rare (large snapshots): their rows go in at once."""
        stored_nonfinite, rows = snapshot_rows(m)
        for index, table in rows:
            insert_arrow(self.cur, parts.PENDING_TABLES[index], table)
        state = parts.record_part(self.cur, m, stored_nonfinite, self.now)
        if state.rows_stored < state.rows_total:
            return
        run_id, step = m.run_id, int(m.step)
        self._drop_earlier_snapshot(run_id, step)
        parts.move_complete(self.cur, run_id, step)
        insert_arrow(self.cur, "snapshots", self._index_rows(
            run_id, step, state.epoch,
            {layer: (state.rows_total, dim, state.nonfinite(layer))
             for layer, (dim, _counted, _stored) in state.layers.items()}))
        self.stored.append(parts.load_complete(self.cur, run_id, step, state)
                           if self.publish else m)

    def _index_rows(self, run_id: str, step: int, epoch: int,
                    layers: dict[str, tuple[int, int, int]]) -> pa.Table:
        for layer in layers:
            self.snapshot_layers.add((run_id, layer))
        return index_rows(run_id, step, epoch, layers, self.now)

    def _drop_earlier_snapshot(self, run_id: str, step: int) -> None:
        """A second snapshot at one step (say the epoch-end one on an every-N step) replaces
        the first, so that each (run, step, layer) has one set of rows. The projector's output
        for the first one goes too: it no longer matches the stored features."""
        self.snapshot_pieces.drop((run_id, step))  # one earlier in this batch
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
        RunStart: _run_start, ProbeSet: _probe, Scalars: _scalars, ScalarSeries: _scalar_series,
        LayerStats: _layer_stats, Snapshot: _snapshot, Event: _event, Status: _status,
        RunEnd: _run_end,
    }
