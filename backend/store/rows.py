"""Rows into DuckDB through Arrow: one bulk insert per table and batch instead of row by row
(which DuckDB runs slowly, and each statement costs a fixed overhead of its own), and float16
vectors as BLOBs (DuckDB has no float16 type)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa

#: The name under which :func:`execute_with_rows` shows its rows to SQL.
_INCOMING = "_sentrycam_incoming_rows"


def execute_with_rows(cur: duckdb.DuckDBPyConnection, sql: str, rows: pa.Table,
                      params: Sequence[Any] = ()) -> duckdb.DuckDBPyConnection:
    """Run ``sql`` on ``cur`` with ``rows`` readable as the relation named ``{rows}`` in it.

    DuckDB finds the Arrow table by its replacement scan of this frame's local variables:
    cheaper than a ``register``/``unregister`` pair, which cost more than a small insert itself
    (a batch's fixed cost, paid per commit).
    """
    _sentrycam_incoming_rows = rows  # noqa: F841 (read by DuckDB's replacement scan)
    return cur.execute(sql.format(rows=_INCOMING), list(params))


def insert_arrow(cur: duckdb.DuckDBPyConnection, table: str, rows: pa.Table,
                 constants: Mapping[str, Any] | None = None) -> None:
    """Bulk insert ``rows`` (column names as in ``table``); ``constants`` fill the columns
    that are the same on every row, so that they need no array of their own."""
    if rows.num_rows == 0:
        return
    constants = dict(constants or {})
    columns = list(constants) + rows.column_names
    select = ", ".join(["?"] * len(constants) + [f'"{c}"' for c in rows.column_names])
    execute_with_rows(cur, f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} "
                      "FROM {rows}", rows, list(constants.values()))


def float16_blobs(features: np.ndarray) -> pa.Array:
    """One BLOB per row of ``features`` (float16 [N, D]), built over the same buffer
    without a Python loop. Returns a pyarrow binary array of length N."""
    feats = np.ascontiguousarray(features, dtype="<f2")
    n, d = feats.shape
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(2 * d), n,
                                                 [None, pa.py_buffer(feats)])
    return fixed.cast(pa.binary())


class Columns:
    """Rows of one table that arrive a few at a time (scalars, events), gathered column by
    column as Python values and turned into one Arrow table at the end of a batch."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.data: dict[str, list] = {name: [] for name in schema.names}

    def extend(self, **columns: Iterable) -> None:
        for name, values in columns.items():
            self.data[name].extend(values)

    def table(self) -> pa.Table:
        return pa.table({n: pa.array(v, type=self.schema.field(n).type)
                         for n, v in self.data.items()}, schema=self.schema)


class Pieces:
    """Arrow tables for several DuckDB tables, gathered under a key (a snapshot's run and
    step) so that a group can still be dropped before the batch's one insert per table."""

    def __init__(self) -> None:
        self._groups: dict[Any, list[tuple[str, pa.Table]]] = {}

    def add(self, key: Any, table: str, rows: pa.Table) -> None:
        self._groups.setdefault(key, []).append((table, rows))

    def drop(self, key: Any) -> None:
        self._groups.pop(key, None)

    def tables(self) -> dict[str, pa.Table]:
        """Each DuckDB table's rows, in the order they were added."""
        by_table: dict[str, list[pa.Table]] = {}
        for group in self._groups.values():
            for table, rows in group:
                by_table.setdefault(table, []).append(rows)
        return {table: pa.concat_tables(parts) for table, parts in by_table.items()}
