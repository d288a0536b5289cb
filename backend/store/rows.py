"""Rows into DuckDB through Arrow: one bulk insert per table instead of row by row (which
DuckDB runs slowly), and float16 vectors as BLOBs (DuckDB has no float16 type)."""

from __future__ import annotations

from typing import Any, Mapping

import duckdb
import numpy as np
import pyarrow as pa

_INCOMING = "_sentrycam_incoming_rows"


def insert_arrow(cur: duckdb.DuckDBPyConnection, table: str, rows: pa.Table,
                 constants: Mapping[str, Any] | None = None) -> None:
    """Bulk insert ``rows`` (column names as in ``table``); ``constants`` fill the columns
    that are the same on every row, so that they need no array of their own."""
    if rows.num_rows == 0:
        return
    constants = dict(constants or {})
    columns = list(constants) + rows.column_names
    select = ", ".join(["?"] * len(constants) + [f'"{c}"' for c in rows.column_names])
    cur.register(_INCOMING, rows)
    try:
        cur.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} FROM {_INCOMING}",
                    list(constants.values()))
    finally:
        cur.unregister(_INCOMING)


def float16_blobs(features: np.ndarray) -> pa.Array:
    """One BLOB per row of ``features`` (float16 [N, D]), built over the same buffer
    without a Python loop. Returns a pyarrow binary array of length N."""
    feats = np.ascontiguousarray(features, dtype="<f2")
    n, d = feats.shape
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(2 * d), n,
                                                 [None, pa.py_buffer(feats)])
    return fixed.cast(pa.binary())
