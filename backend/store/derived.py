"""Data the server derives from captures: 2D embeddings, projector checkpoints, projection
quality, and alerts. Writes run inside the caller's transaction on the store's writer cursor;
reads take the cursor of one call.

Shapes: ``sample_ids`` int64 [N]; ``coords`` float32 [N, 2]; trails come back columnar.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from sentrycam.backend.store.errors import MissingSnapshotError, UnknownAlertError
from sentrycam.backend.store.reader import iso_utc, require_run
from sentrycam.backend.store.schema import first_row
from sentrycam.backend.store.rows import insert_arrow
from sentrycam.backend.store.writer import to_json, utc_now

Cursor = duckdb.DuckDBPyConnection

#: Projector checkpoints kept per (run_id, layer): enough to resume, not a history.
CHECKPOINTS_KEPT = 3

ALERT_FIELDS = ("step", "detector", "layer", "severity", "magnitude", "duration", "evidence",
                "message", "suggestion", "confidence")
_ALERT_COLUMNS = ("alert_id", "run_id") + ALERT_FIELDS + ("acknowledged", "created_at",
                                                          "updated_at")


# ----------------------------------------------------------------------------- embeddings

def _embedding_arrays(sample_ids: Any, coords: Any) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(sample_ids)
    xy = np.asarray(coords, dtype=np.float32)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"sample_ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    if xy.shape != (len(ids), 2):
        raise ValueError(f"coords must have shape [N, 2] = [{len(ids)}, 2] to match sample_ids, "
                         f"got {xy.shape}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("sample_ids hold duplicates; each probe sample has one position")
    return ids.astype(np.int64, copy=False), xy


def write_embedding(cur: Cursor, run_id: str, layer: str, step: int, sample_ids: Any,
                    coords: Any, checkpoint: bytes | None) -> None:
    """Replace the coordinates of (run_id, layer, step); keep the newest checkpoints."""
    require_run(cur, run_id)
    ids, xy = _embedding_arrays(sample_ids, coords)
    key = [run_id, int(step), str(layer)]
    cur.execute("DELETE FROM embeddings WHERE run_id = ? AND step = ? AND layer = ?", key)
    rows = pa.table({"sample_id": pa.array(ids), "x": pa.array(xy[:, 0]),
                     "y": pa.array(xy[:, 1])})
    insert_arrow(cur, "embeddings", rows, {"run_id": run_id, "step": int(step),
                                           "layer": str(layer)})
    if checkpoint is None:
        return
    if not isinstance(checkpoint, (bytes, bytearray, memoryview)):
        raise TypeError(f"checkpoint must be bytes, got {type(checkpoint).__name__}")
    cur.execute("DELETE FROM projector_checkpoints WHERE run_id = ? AND step = ? AND layer = ?",
                key)
    cur.execute("INSERT INTO projector_checkpoints (run_id, layer, step, state, created_at) "
                "VALUES (?, ?, ?, ?, ?)", [run_id, str(layer), int(step), bytes(checkpoint),
                                          utc_now()])
    cur.execute("""DELETE FROM projector_checkpoints WHERE run_id = ? AND layer = ? AND step NOT IN (
                     SELECT step FROM projector_checkpoints WHERE run_id = ? AND layer = ?
                     ORDER BY step DESC LIMIT ?)""",
                [run_id, str(layer), run_id, str(layer), CHECKPOINTS_KEPT])


def write_quality(cur: Cursor, run_id: str, layer: str, step: int,
                  metrics: Mapping[str, float]) -> None:
    """Replace the quality metrics of (run_id, layer, step)."""
    require_run(cur, run_id)
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping name -> float, got {type(metrics).__name__}")
    values = {str(name): float(value) for name, value in metrics.items()}
    cur.execute("DELETE FROM projection_quality WHERE run_id = ? AND step = ? AND layer = ?",
                [run_id, int(step), str(layer)])
    rows = pa.table({"metric": pa.array(list(values), pa.string()),
                     "value": pa.array(list(values.values()), pa.float64())})
    insert_arrow(cur, "projection_quality", rows, {"run_id": run_id, "step": int(step),
                                                   "layer": str(layer)})


def embedding_index(cur: Cursor, run_id: str) -> list[dict]:
    """[{step, layer, n}] of the stored embeddings in (step, layer) order."""
    require_run(cur, run_id)
    rows = cur.execute("SELECT step, layer, count(*) FROM embeddings WHERE run_id = ? "
                       "GROUP BY step, layer ORDER BY step, layer", [run_id]).fetchall()
    return [{"step": step, "layer": layer, "n": n} for step, layer, n in rows]


def embedding(cur: Cursor, run_id: str, layer: str, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample_ids int64 [N], coords float32 [N, 2]) in sample_id order."""
    require_run(cur, run_id)
    table = cur.sql("SELECT sample_id, x, y FROM embeddings WHERE run_id = ? AND layer = ? "
                    "AND step = ? ORDER BY sample_id",
                    params=[run_id, str(layer), int(step)]).to_arrow_table()
    if table.num_rows == 0:
        raise MissingSnapshotError(
            f"no embedding for run {run_id!r}, layer {layer!r} at step {step}; see "
            "embedding_index() for what is stored (the projector may still be working)",
            run_id=run_id, step=int(step), layer=str(layer))
    ids = table.column("sample_id").to_numpy().astype(np.int64, copy=False)
    coords = np.stack([table.column("x").to_numpy(), table.column("y").to_numpy()], axis=1)
    return ids, coords.astype(np.float32, copy=False)


def embedding_trails(cur: Cursor, run_id: str, layer: str,
                     sample_ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Every stored position of the given samples: {sample_id int64 [M], step int64 [M],
    x float32 [M], y float32 [M]} in (sample_id, step) order."""
    require_run(cur, run_id)
    wanted = [int(s) for s in sample_ids]
    table = cur.sql("SELECT sample_id, step, x, y FROM embeddings WHERE run_id = ? AND layer = ? "
                    "AND list_contains(?, sample_id) ORDER BY sample_id, step",
                    params=[run_id, str(layer), wanted]).to_arrow_table()
    dtypes = {"sample_id": np.int64, "step": np.int64, "x": np.float32, "y": np.float32}
    return {name: table.column(name).to_numpy().astype(dtype, copy=False)
            for name, dtype in dtypes.items()}


def projection_quality(cur: Cursor, run_id: str, layer: str | None) -> dict[str, list]:
    """Columnar {step, layer, metric, value} in (step, layer, metric) order."""
    require_run(cur, run_id)
    where, params = "run_id = ?", [run_id]
    if layer is not None:
        where, params = where + " AND layer = ?", params + [str(layer)]
    rows = cur.execute(f"SELECT step, layer, metric, value FROM projection_quality WHERE {where} "
                       "ORDER BY step, layer, metric", params).fetchall()
    keys = ("step", "layer", "metric", "value")
    return {key: [row[i] for row in rows] for i, key in enumerate(keys)}


def latest_checkpoint(cur: Cursor, run_id: str, layer: str) -> tuple[int, bytes] | None:
    """(step, state) of the newest checkpoint of (run_id, layer), or None."""
    row = first_row(cur, "SELECT step, state FROM projector_checkpoints WHERE run_id = ? AND "
                         "layer = ? ORDER BY step DESC LIMIT 1", [run_id, str(layer)])
    return None if row is None else (int(row[0]), bytes(row[1]))


# ----------------------------------------------------------------------------- alerts

def _alert_values(alert: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(alert) - set(ALERT_FIELDS)
    if unknown:
        raise ValueError(f"unknown alert fields {sorted(unknown)}; allowed: {ALERT_FIELDS}")
    for name in ("step", "detector", "severity"):
        if alert.get(name) is None:
            raise ValueError(f"an alert needs {name!r}")
    severity = int(alert["severity"])
    if not 0 <= severity <= 3:
        raise ValueError(f"alert severity must be 0-3, got {severity}")
    values = {name: alert.get(name) for name in ALERT_FIELDS}
    values.update(step=int(alert["step"]), severity=severity, detector=str(alert["detector"]))
    for name in ("magnitude", "confidence"):
        value = values[name]
        values[name] = None if value is None or not math.isfinite(float(value)) else float(value)
    values["evidence"] = None if values["evidence"] is None else to_json(values["evidence"])
    return values


def upsert_alert(cur: Cursor, run_id: str, alert: Mapping[str, Any],
                 alert_id: int | None) -> int:
    """Insert an alert, or update ``alert_id`` (all fields but its first step)."""
    require_run(cur, run_id)
    values, now = _alert_values(alert), utc_now()
    if alert_id is None:
        names = ("run_id",) + ALERT_FIELDS + ("created_at", "updated_at")
        row = first_row(cur, f"INSERT INTO alerts ({', '.join(names)}) VALUES "
                             f"({', '.join('?' * len(names))}) RETURNING alert_id",
                        [run_id, *values.values(), now, now])
        return int(row[0])
    values.pop("step")
    assignments = ", ".join(f"{name} = ?" for name in values)
    row = first_row(cur, f"UPDATE alerts SET {assignments}, updated_at = ? WHERE alert_id = ? "
                         "AND run_id = ? RETURNING alert_id",
                    [*values.values(), now, int(alert_id), run_id])
    if row is None:
        raise UnknownAlertError(int(alert_id))
    return int(row[0])


def acknowledge_alert(cur: Cursor, alert_id: int) -> None:
    row = first_row(cur, "UPDATE alerts SET acknowledged = true, updated_at = ? "
                         "WHERE alert_id = ? RETURNING alert_id", [utc_now(), int(alert_id)])
    if row is None:
        raise UnknownAlertError(int(alert_id))


def alerts(cur: Cursor, run_id: str | None, min_severity: int) -> list[dict]:
    """Alerts in (step, alert_id) order; evidence parsed; times ISO text in UTC."""
    where, params = "severity >= ?", [int(min_severity)]
    if run_id is not None:
        require_run(cur, run_id)
        where, params = where + " AND run_id = ?", params + [run_id]
    rows = cur.execute(f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts WHERE {where} "
                       "ORDER BY step, alert_id", params).fetchall()
    result = []
    for row in rows:
        item = dict(zip(_ALERT_COLUMNS, row))
        item["evidence"] = json.loads(item["evidence"]) if item["evidence"] else None
        for key in ("created_at", "updated_at"):
            item[key] = iso_utc(item[key])
        result.append(item)
    return result
