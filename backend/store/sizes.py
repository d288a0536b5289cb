"""How many bytes the store holds: the file on disk, and the data of each run and snapshot.

DuckDB compresses and pages its tables, so the bytes of one run inside the file cannot be read
off it; what is counted here is each row's data, uncompressed: fixed-width columns at their
width, text and blobs at their length. ``feature_bytes`` are the feature vectors (float16:
``n * dim * 2`` per snapshot and layer that still has them); ``other_bytes`` everything else
of the run (scalars, statistics, snapshot rows, predictions, 2D maps, checkpoints, quality,
events, alerts, the probe set, the run's row). The file's own size (``file_bytes``, with its
write-ahead log) is what the disk holds; deleting rows frees room inside the file for new rows
but shrinks it only when it is rewritten (``sentrycam compact``).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import duckdb

Cursor = duckdb.DuckDBPyConnection

#: Bytes of one value of each fixed-width column type.
_WIDTHS = {"BIGINT": 8, "DOUBLE": 8, "TIMESTAMP": 8, "FLOAT": 4, "INTEGER": 4, "UTINYINT": 1,
           "BOOLEAN": 1}
#: Tables whose rows belong to one snapshot step: their bytes count as that snapshot's rest.
SNAPSHOT_TABLES = ("snapshots", "predictions", "embeddings", "projection_quality")
_FEATURE_BYTES = "sum(CASE WHEN has_features THEN n * dim * 2 ELSE 0 END)"


def file_bytes(path: pathlib.Path) -> dict[str, int]:
    """{file_bytes, wal_bytes} of the DuckDB file at ``path`` (0 for a missing file)."""
    sizes = {}
    for key, name in (("file_bytes", str(path)), ("wal_bytes", f"{path}.wal")):
        try:
            sizes[key] = os.path.getsize(name)
        except OSError:
            sizes[key] = 0
    return sizes


def _row_bytes(cur: Cursor, table: str) -> str:
    """A SQL expression: the data bytes of one row of ``table``."""
    terms = []
    for column, data_type in cur.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? "
            "AND database_name = current_database() ORDER BY column_index", [table]).fetchall():
        if data_type in _WIDTHS:
            terms.append(str(_WIDTHS[data_type]))
        elif data_type == "BLOB":
            terms.append(f'coalesce(octet_length("{column}"), 0)')
        else:  # VARCHAR, JSON, anything else: its text
            terms.append(f'coalesce(strlen(CAST("{column}" AS VARCHAR)), 0)')
    return " + ".join(terms) or "0"


def _run_tables(cur: Cursor) -> list[str]:
    """Tables with a run_id column, except features (counted from snapshots) and the
    pending_* tables (parts of snapshots in transit)."""
    return [table for (table,) in cur.execute(
        "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'run_id' "
        "AND database_name = current_database() AND table_name <> 'features' "
        "AND table_name NOT LIKE 'pending_%' ORDER BY table_name").fetchall()]


def run_sizes(cur: Cursor, run_id: str | None = None) -> dict[str, dict[str, int]]:
    """{run_id: {feature_bytes, other_bytes, snapshots, snapshots_with_features}} of one run
    or every run (counted per (step, layer) snapshot)."""
    where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
    sizes = {r: {"feature_bytes": 0, "other_bytes": 0, "snapshots": 0,
                 "snapshots_with_features": 0}
             for (r,) in cur.execute(f"SELECT run_id FROM runs {where}", params).fetchall()}
    for r, features, count, with_features in cur.execute(
            f"SELECT run_id, {_FEATURE_BYTES}, count(*), count(*) FILTER (has_features) "
            f"FROM snapshots {where} GROUP BY run_id", params).fetchall():
        sizes[r].update(feature_bytes=int(features or 0), snapshots=int(count),
                        snapshots_with_features=int(with_features))
    for table in _run_tables(cur):
        for r, other in cur.execute(f"SELECT run_id, sum({_row_bytes(cur, table)}) "
                                    f"FROM {table} {where} GROUP BY run_id", params).fetchall():
            if r in sizes:
                sizes[r]["other_bytes"] += int(other or 0)
    return sizes


def snapshot_sizes(cur: Cursor, run_id: str) -> list[dict[str, Any]]:
    """One dict per snapshot step of the run, in step order: step, layers (with snapshots),
    layers_with_features, feature_bytes, other_bytes (its rows in :data:`SNAPSHOT_TABLES`)."""
    steps: dict[int, dict[str, Any]] = {}
    for step, layers, with_features, features in cur.execute(
            f"SELECT step, count(*), count(*) FILTER (has_features), {_FEATURE_BYTES} "
            "FROM snapshots WHERE run_id = ? GROUP BY step ORDER BY step", [run_id]).fetchall():
        steps[int(step)] = {"step": int(step), "layers": int(layers),
                            "layers_with_features": int(with_features),
                            "feature_bytes": int(features or 0), "other_bytes": 0}
    for table in SNAPSHOT_TABLES:
        for step, other in cur.execute(f"SELECT step, sum({_row_bytes(cur, table)}) FROM "
                                       f"{table} WHERE run_id = ? GROUP BY step",
                                       [run_id]).fetchall():
            if int(step) in steps:
                steps[int(step)]["other_bytes"] += int(other or 0)
    return list(steps.values())


def storage(cur: Cursor, path: pathlib.Path, run_id: str | None = None) -> dict[str, Any]:
    """:meth:`Store.storage`'s answer: the file's bytes, every run's (or ``run_id``'s) sizes,
    and with ``run_id`` that run's snapshots."""
    result: dict[str, Any] = {**file_bytes(path), "runs": run_sizes(cur, run_id)}
    if run_id is not None:
        result["snapshots"] = snapshot_sizes(cur, run_id)
    return result
