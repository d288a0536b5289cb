"""Queries: every function reads through the cursor it is given (one per call and thread).

Results are plain Python (dicts of lists, lists of dicts) or numpy arrays, so that the REST
layer and the CLI can use them without knowing DuckDB. Floats NaN/Inf come back as stored.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sentrycam.backend.store.errors import MissingSnapshotError, UnknownRunError
from sentrycam.backend.store.schema import PREDICTION_COLUMNS, first_row

Cursor = duckdb.DuckDBPyConnection


def require_run(cur: Cursor, run_id: str) -> None:
    """Raise :class:`UnknownRunError` unless ``run_id`` has a runs row."""
    if not isinstance(run_id, str) or first_row(
            cur, "SELECT 1 FROM runs WHERE run_id = ?", [run_id]) is None:
        raise UnknownRunError(run_id)


def iso_utc(value: dt.datetime | None) -> str | None:
    """TIMESTAMP columns hold naive UTC; say so in the ISO text."""
    return None if value is None else value.replace(tzinfo=dt.timezone.utc).isoformat()


def _arrow(cur: Cursor, sql: str, params: list[Any]) -> pa.Table:
    return cur.sql(sql, params=params).to_arrow_table()


# Each per-run aggregate is grouped once over its table (one scan), then joined to runs; one
# statement, so that all counts come from the same committed state even while a batch lands.
_SUMMARY_SQL = """
WITH
  sc AS (SELECT run_id, count(*) AS n FROM scalars {where} GROUP BY run_id),
  sn AS (SELECT run_id, count(DISTINCT step) AS n FROM snapshots {where} GROUP BY run_id),
  ly AS (SELECT run_id, list(DISTINCT layer ORDER BY layer) AS layers FROM (
           SELECT run_id, layer FROM snapshots {where}
           UNION SELECT run_id, layer FROM layer_stats {where}) GROUP BY run_id),
  pr AS (SELECT run_id, count(*) AS n FROM probe_samples {where} GROUP BY run_id),
  em AS (SELECT run_id, count(*) AS n FROM (SELECT DISTINCT run_id, step, layer
                                             FROM embeddings {where}) GROUP BY run_id),
  al AS (SELECT run_id, count(*) AS n FROM alerts {where} GROUP BY run_id),
  ev AS (SELECT run_id, count(*) AS n FROM events {where} GROUP BY run_id)
SELECT r.run_id, r.name, r.status, r.created_at, r.last_step,
       coalesce(sc.n, 0), coalesce(sn.n, 0), coalesce(ly.layers, []), coalesce(pr.n, 0),
       coalesce(em.n, 0), coalesce(al.n, 0), r.dropped, r.capture_overhead, r.snapshot_every,
       coalesce(ev.n, 0), r.spooled, r.updated_at, r.ended_at, r.config
FROM runs r
  LEFT JOIN sc USING (run_id) LEFT JOIN sn USING (run_id) LEFT JOIN ly USING (run_id)
  LEFT JOIN pr USING (run_id) LEFT JOIN em USING (run_id) LEFT JOIN al USING (run_id)
  LEFT JOIN ev USING (run_id)
{where_runs}
ORDER BY r.created_at DESC, r.run_id
"""

_SUMMARY_KEYS = ("run_id", "name", "status", "created_at", "last_step", "n_scalar_rows",
                 "n_snapshots", "layers", "n_probe", "n_embeddings", "n_alerts", "dropped",
                 "capture_overhead", "snapshot_every", "n_events", "spooled", "updated_at",
                 "ended_at", "config")


def run_summaries(cur: Cursor, run_id: str | None = None) -> list[dict]:
    """One dict per run, newest first (keys: see ``_SUMMARY_KEYS``; times are ISO text in
    UTC; ``config`` is RunStart.config, {} until it arrives)."""
    if run_id is not None:
        require_run(cur, run_id)
        sql = _SUMMARY_SQL.format(where="WHERE run_id = $run", where_runs="WHERE r.run_id = $run")
        rows = cur.execute(sql, {"run": run_id}).fetchall()
    else:
        rows = cur.execute(_SUMMARY_SQL.format(where="", where_runs="")).fetchall()
    summaries = []
    for row in rows:
        summary = dict(zip(_SUMMARY_KEYS, row))
        for key in ("created_at", "updated_at", "ended_at"):
            summary[key] = iso_utc(summary[key])
        summary["config"] = json.loads(summary["config"]) if summary["config"] else {}
        summary["layers"] = list(summary["layers"])
        summaries.append(summary)
    return summaries


def scalars(cur: Cursor, run_id: str, names: Sequence[str] | None = None,
            since_step: int | None = None, limit: int | None = None) -> dict[str, list]:
    """Scalar rows in (step, name) order, columnar: {step, name, value, wall_time}.

    ``names`` keeps only those names; ``since_step`` keeps rows with step >= since_step (>=, as
    values of one step can arrive in several messages); ``limit`` keeps the first rows.
    """
    require_run(cur, run_id)
    if isinstance(names, str):
        raise TypeError(f"names must be a list of scalar names, not the string {names!r}")
    where, params = ["run_id = ?"], [run_id]
    if names is not None:
        where.append("list_contains(?, name)")
        params.append(list(names))
    if since_step is not None:
        where.append("step >= ?")
        params.append(int(since_step))
    sql = (f"SELECT step, name, value, wall_time FROM scalars WHERE {' AND '.join(where)} "
           "ORDER BY step, name")
    if limit is not None:
        if int(limit) < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        sql += f" LIMIT {int(limit)}"
    return _arrow(cur, sql, params).to_pydict()


def scalar_names(cur: Cursor, run_id: str) -> list[str]:
    require_run(cur, run_id)
    rows = cur.execute("SELECT DISTINCT name FROM scalars WHERE run_id = ? ORDER BY name",
                       [run_id]).fetchall()
    return [name for (name,) in rows]


def layer_stats(cur: Cursor, run_id: str, since_step: int | None = None) -> dict[str, list]:
    """Layer statistics in (step, layer, stat) order, columnar: {step, layer, stat, value}."""
    require_run(cur, run_id)
    where, params = "run_id = ?", [run_id]
    if since_step is not None:
        where += " AND step >= ?"
        params.append(int(since_step))
    return _arrow(cur, f"SELECT step, layer, stat, value FROM layer_stats WHERE {where} "
                       "ORDER BY step, layer, stat", params).to_pydict()


def snapshot_index(cur: Cursor, run_id: str) -> list[dict]:
    """One dict per (step, layer) snapshot in (step, layer) order:
    step, epoch, layer, n, dim, nonfinite, has_features (False once retention dropped them)."""
    require_run(cur, run_id)
    table = _arrow(cur, "SELECT step, epoch, layer, n, dim, nonfinite, has_features "
                        "FROM snapshots WHERE run_id = ? ORDER BY step, layer", [run_id])
    return table.to_pylist()


def _blobs_to_float16(vectors: pa.ChunkedArray, what: str) -> np.ndarray:
    """BLOB rows of equal length -> float16 [N, D], over one buffer without a Python loop."""
    array = vectors.combine_chunks()
    if len(array) == 0:
        return np.zeros((0, 0), dtype=np.float16)
    offset_type = np.int64 if pa.types.is_large_binary(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=offset_type)[
        array.offset:array.offset + len(array) + 1]
    widths = np.diff(offsets)
    if widths.min() != widths.max() or widths[0] % 2:
        raise ValueError(f"{what}: stored vectors have unequal byte lengths; the file is damaged")
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    return data.view("<f2").reshape(len(array), int(widths[0]) // 2).copy()


def features(cur: Cursor, run_id: str, step: int, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """(sample_ids int64 [N], features float16 [N, D]) in sample_id order.

    Raises :class:`MissingSnapshotError` when the run has no features at that step and layer.
    """
    require_run(cur, run_id)
    table = _arrow(cur, "SELECT sample_id, vec FROM features WHERE run_id = ? AND step = ? "
                        "AND layer = ? ORDER BY sample_id", [run_id, int(step), layer])
    if table.num_rows == 0:
        row = first_row(cur, "SELECT has_features, n, dim FROM snapshots WHERE run_id = ? "
                             "AND step = ? AND layer = ?", [run_id, int(step), layer])
        if row is not None and row[0] and row[1] == 0:  # a snapshot of an empty probe set
            return np.zeros(0, dtype=np.int64), np.zeros((0, row[2]), dtype=np.float16)
        raise _missing_features(cur, run_id, int(step), layer, row)
    ids = table.column("sample_id").to_numpy().astype(np.int64, copy=False)
    return ids, _blobs_to_float16(table.column("vec"), f"run {run_id!r} step {step} {layer!r}")


def _missing_features(cur: Cursor, run_id: str, step: int, layer: str,
                      snapshot_row: tuple | None) -> MissingSnapshotError:
    """The error for absent features, saying why they are absent (``snapshot_row``:
    (has_features, ...) of the snapshot row, None when there is none)."""
    row = snapshot_row
    if row is not None and not row[0]:
        why = "its feature vectors were deleted by the retention setting (max_snapshots)"
    elif row is not None:
        why = "it has no feature rows"
    else:
        layers = [name for (name,) in cur.execute(
            "SELECT DISTINCT layer FROM snapshots WHERE run_id = ? ORDER BY layer",
            [run_id]).fetchall()]
        why = f"there is no snapshot of it at that step (layers: {layers})"
    return MissingSnapshotError(
        f"no features for run {run_id!r} at step {step}, layer {layer!r}: {why}; "
        "see snapshot_index() for what is stored", run_id=run_id, step=step, layer=layer)


def predictions(cur: Cursor, run_id: str, step: int) -> dict[str, np.ndarray]:
    """Model outputs on the probe at one snapshot, in sample_id order.

    Keys: sample_id int64 [N], pred int64 [N] (-1 where not sent), confidence, loss, entropy,
    margin float32 [N] (NaN where not sent). Empty arrays when the snapshot had no outputs.
    """
    require_run(cur, run_id)
    table = _arrow(cur, "SELECT sample_id, pred, confidence, loss, entropy, margin "
                        "FROM predictions WHERE run_id = ? AND step = ? ORDER BY sample_id",
                   [run_id, int(step)])
    if table.num_rows == 0 and first_row(
            cur, "SELECT 1 FROM snapshots WHERE run_id = ? AND step = ? LIMIT 1",
            [run_id, int(step)]) is None:
        raise MissingSnapshotError(
            f"no snapshot for run {run_id!r} at step {step}; see snapshot_index() for the "
            "stored steps", run_id=run_id, step=int(step))
    result = {"sample_id": table.column("sample_id").to_numpy().astype(np.int64, copy=False)}
    for name, arrow_type in PREDICTION_COLUMNS.items():
        fill = -1 if name == "pred" else float("nan")
        column = pc.fill_null(table.column(name), pa.scalar(fill, type=arrow_type))
        result[name] = column.to_numpy().astype(arrow_type.to_pandas_dtype(), copy=False)
    return result


def probe(cur: Cursor, run_id: str) -> dict[str, np.ndarray]:
    """The run's probe set in sample_id order: sample_id int64, label int64, split uint8 [N]."""
    require_run(cur, run_id)
    table = _arrow(cur, "SELECT sample_id, label, split FROM probe_samples WHERE run_id = ? "
                        "ORDER BY sample_id", [run_id])
    dtypes = {"sample_id": np.int64, "label": np.int64, "split": np.uint8}
    return {name: table.column(name).to_numpy().astype(dtype, copy=False)
            for name, dtype in dtypes.items()}


def events(cur: Cursor, run_id: str) -> list[dict]:
    """The run's events in (step, wall_time) order: step, wall_time, event, message, payload."""
    require_run(cur, run_id)
    rows = cur.execute("SELECT step, wall_time, event, message, payload FROM events "
                       "WHERE run_id = ? ORDER BY step, wall_time", [run_id]).fetchall()
    keys = ("step", "wall_time", "event", "message", "payload")
    result = [dict(zip(keys, row)) for row in rows]
    for item in result:
        item["payload"] = json.loads(item["payload"]) if item["payload"] else {}
    return result
