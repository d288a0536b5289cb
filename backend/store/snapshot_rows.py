"""A snapshot's rows as Arrow tables, ready for one bulk insert per table and batch: feature
vectors (float16 bytes in a BLOB column, one table per layer), predictions, and the
``snapshots`` index rows."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pyarrow as pa

from sentrycam.backend.store.rows import float16_blobs
from sentrycam.backend.store.schema import PREDICTION_COLUMNS
from sentrycam.protocol.messages import Snapshot

logger = logging.getLogger(__name__)

#: A tag of each table :func:`snapshot_rows` returns: its index in (features, predictions).
FEATURES, PREDICTIONS = 0, 1


def snapshot_rows(m: Snapshot) -> tuple[dict[str, int], list[tuple[int, pa.Table]]]:
    """``m``'s feature rows (one table per layer: run_id, step, layer, sample_id, vec) and
    prediction rows (run_id, step, sample_id and the :data:`PREDICTION_COLUMNS`), each tagged
    :data:`FEATURES` or :data:`PREDICTIONS`; and each layer's NaN/Inf count in its stored
    float16 rows."""
    run_id, step = pa.scalar(m.run_id, pa.string()), pa.scalar(int(m.step), pa.int64())
    sample_ids = pa.array(np.asarray(m.sample_ids, dtype=np.int64))
    n = len(sample_ids)
    stored_nonfinite, rows = {}, []
    for layer, raw in m.features.items():
        feats = np.asarray(raw)
        if feats.dtype != np.float16:
            feats = feats.astype(np.float16)
        # The agent counts before its float16 cast; the cast itself can overflow to Inf.
        stored_nonfinite[layer] = int(feats.size - np.count_nonzero(np.isfinite(feats)))
        rows.append((FEATURES, pa.table({
            "run_id": pa.repeat(run_id, n), "step": pa.repeat(step, n),
            "layer": pa.repeat(pa.scalar(layer, pa.string()), n),
            "sample_id": sample_ids, "vec": float16_blobs(feats)})))
    if m.outputs:
        predictions = prediction_rows(m, sample_ids)
        rows.append((PREDICTIONS, predictions.add_column(0, "run_id", pa.repeat(run_id, n))
                     .add_column(1, "step", pa.repeat(step, n))))
    return stored_nonfinite, rows


def prediction_rows(m: Snapshot, sample_ids: pa.Array) -> pa.Table:
    """sample_id and every :data:`PREDICTION_COLUMNS` column (nulls where ``m`` has no such
    output; outputs without a column are not stored)."""
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


def index_rows(run_id: str, step: int, epoch: int, layers: dict[str, tuple[int, int, int]],
               now: dt.datetime) -> pa.Table:
    """The ``snapshots`` rows of one snapshot; ``layers``: layer -> (n, dim, nonfinite)."""
    count = len(layers)
    n, dim, nonfinite = zip(*layers.values()) if layers else ((), (), ())
    return pa.table({
        "run_id": pa.repeat(run_id, count), "step": pa.repeat(step, count),
        "epoch": pa.repeat(epoch, count), "layer": pa.array(list(layers), pa.string()),
        "n": pa.array(n, pa.int64()), "dim": pa.array(dim, pa.int64()),
        "nonfinite": pa.array(nonfinite, pa.int64()), "has_features": pa.repeat(True, count),
        "created_at": pa.repeat(pa.scalar(now, pa.timestamp("us")), count)})
