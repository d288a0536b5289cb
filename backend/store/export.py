"""Parquet export of one run: one file per table, holding that run's rows.

Rows stream through Arrow record batches, so a run with gigabytes of feature vectors is
written without holding it in memory. Feature vectors stay float16 bytes in a binary column
(``numpy.frombuffer(vec, "<f2")`` reads one back); see docs/schema.md for every column.
"""

from __future__ import annotations

import logging
import os
import pathlib

import duckdb
import pyarrow.parquet as pq

from sentrycam.backend.store.reader import require_run

logger = logging.getLogger(__name__)

#: Tables exported, in this order; each becomes ``<table>.parquet``.
EXPORT_TABLES: tuple[str, ...] = (
    "runs", "probe_samples", "scalars", "layer_stats", "snapshots", "features", "predictions",
    "embeddings", "projection_quality", "alerts", "events",
)

#: Row order inside each file, so that exports of one run compare equal.
_ORDER_BY = {
    "runs": "run_id",
    "probe_samples": "sample_id",
    "scalars": "step, name",
    "layer_stats": "step, layer, stat",
    "snapshots": "step, layer",
    "features": "step, layer, sample_id",
    "predictions": "step, sample_id",
    "embeddings": "step, layer, sample_id",
    "projection_quality": "step, layer, metric",
    "alerts": "alert_id",
    "events": "step, wall_time",
}


def export_run(cur: duckdb.DuckDBPyConnection, run_id: str,
               out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """Write ``<out_dir>/<table>.parquet`` for every table in :data:`EXPORT_TABLES`.

    Creates ``out_dir`` if needed and replaces files of the same names. Returns the paths
    written, in :data:`EXPORT_TABLES` order. Raises UnknownRunError for an unknown run.
    """
    require_run(cur, run_id)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in EXPORT_TABLES:
        path = out / f"{table}.parquet"
        reader = cur.sql(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY {_ORDER_BY[table]}",
                         params=[run_id]).to_arrow_reader()
        # Write to a side file first so that a failed export never leaves half a file under
        # the real name.
        partial = path.with_name(path.name + ".partial")
        with pq.ParquetWriter(partial, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
        os.replace(partial, path)
        paths.append(path)
    logger.info("exported run %s to %s (%d files)", run_id, out, len(paths))
    return paths
