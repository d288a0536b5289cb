"""Schema versions: a fresh file, a forward migration from version 0, and files it must refuse."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import numpy as np
import pytest

from sentrycam.backend.store import SCHEMA_VERSION, Store, StoreVersionError
from sentrycam.protocol.chunks import snapshot_chunks
from sentrycam.protocol.messages import Snapshot, Status

RUN = "c" * 32

# The layout of a version 0 file, written out by hand: runs without the agent-health columns,
# snapshots without has_features, no projector/alert tables and no schema_meta.
_VERSION_0 = """
CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL,
    status VARCHAR NOT NULL DEFAULT 'running', created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL, ended_at TIMESTAMP, config JSON, last_step BIGINT,
    last_seq BIGINT NOT NULL DEFAULT -1, dropped BIGINT NOT NULL DEFAULT 0);
CREATE TABLE probe_samples (run_id VARCHAR, sample_id BIGINT, label BIGINT, split UTINYINT);
CREATE TABLE scalars (run_id VARCHAR, step BIGINT, name VARCHAR, value DOUBLE, wall_time DOUBLE);
CREATE TABLE layer_stats (run_id VARCHAR, step BIGINT, layer VARCHAR, stat VARCHAR, value DOUBLE);
CREATE TABLE snapshots (run_id VARCHAR, step BIGINT, epoch BIGINT, layer VARCHAR, n BIGINT,
    dim BIGINT, nonfinite BIGINT, created_at TIMESTAMP);
CREATE TABLE features (run_id VARCHAR, step BIGINT, layer VARCHAR, sample_id BIGINT, vec BLOB);
CREATE TABLE predictions (run_id VARCHAR, step BIGINT, sample_id BIGINT, pred BIGINT,
    confidence REAL, loss REAL, entropy REAL, margin REAL);
CREATE TABLE events (run_id VARCHAR, step BIGINT, wall_time DOUBLE, event VARCHAR,
    message VARCHAR, payload JSON);
"""


def _write_version_0_file(path, vectors: np.ndarray) -> None:
    """A run with two snapshots of one layer: step 0 with its features, step 5 without."""
    created = dt.datetime(2025, 3, 1, 12, 0, 0)
    con = duckdb.connect(str(path))
    con.execute(_VERSION_0)
    con.execute("INSERT INTO runs (run_id, name, status, created_at, updated_at, last_step, "
                "last_seq, dropped) VALUES (?, 'old run', 'finished', ?, ?, 5, 9, 1)",
                [RUN, created, created])
    con.execute("INSERT INTO scalars VALUES (?, 0, 'loss', 1.5, 0.0), (?, 5, 'loss', 0.5, 1.0)",
                [RUN, RUN])
    for step in (0, 5):
        con.execute("INSERT INTO snapshots VALUES (?, ?, 0, 'fc:input', ?, ?, 0, ?)",
                    [RUN, step, vectors.shape[0], vectors.shape[1], created])
    for sample_id, row in enumerate(vectors):
        con.execute("INSERT INTO features VALUES (?, 0, 'fc:input', ?, ?)",
                    [RUN, sample_id, row.tobytes()])
    con.close()


def test_a_version_0_file_migrates_forward_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.duckdb"
    vectors = np.random.default_rng(7).standard_normal((6, 4)).astype(np.float16)
    _write_version_0_file(path, vectors)

    with pytest.raises(StoreVersionError, match="read-only open cannot create or migrate"):
        Store(path, read_only=True)

    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        (summary,) = store.run_summaries()
        assert (summary["name"], summary["status"], summary["last_step"]) == ("old run",
                                                                              "finished", 5)
        assert summary["n_scalar_rows"] == 2 and summary["spooled"] == 0
        assert summary["capture_overhead"] is None and summary["n_alerts"] == 0
        # has_features did not exist: it is derived from the feature rows that are there.
        assert [(s["step"], s["has_features"]) for s in store.snapshot_index(RUN)] == [
            (0, True), (5, False)]
        np.testing.assert_array_equal(store.features(RUN, 0, "fc:input")[1], vectors)
        # New columns and tables take writes; seq dedup continues from the old last_seq.
        status = Status(RUN, 6, dropped=2, spooled=3, overhead=0.02, snapshot_every=25,
                        queue_depth=0)
        assert store.write([(9, status)]) == {RUN: 9}  # already stored: skipped
        assert store.write([(10, status)]) == {RUN: 10}
        snap = Snapshot(RUN, 6, 1, np.arange(6), {}, {"fc:input": vectors})
        store.write([(11, snap)])
        # Version 2's tables of snapshots sent in row chunks are there too.
        chunks = snapshot_chunks(dataclasses.replace(snap, step=7), target_bytes=32)
        assert len(chunks) == 3
        store.write([(12 + i, chunk) for i, chunk in enumerate(chunks)])
        np.testing.assert_array_equal(store.features(RUN, 7, "fc:input")[1], vectors)
        summary = store.run_summaries(RUN)[0]
        assert (summary["spooled"], summary["snapshot_every"]) == (3, 25)

    with Store(path, read_only=True) as store:  # now current: read-only works
        assert store.schema_version == SCHEMA_VERSION
        assert len(store.snapshot_index(RUN)) == 4


def test_a_new_file_records_the_current_version(tmp_path):
    path = tmp_path / "sub" / "dir" / "new.duckdb"  # missing folders are made
    Store(path).close()
    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute("SELECT value FROM schema_meta WHERE key = 'schema_version'").fetchall()
    con.close()
    assert rows == [(str(SCHEMA_VERSION),)]


def test_a_file_from_newer_code_is_refused_with_advice(tmp_path):
    path = tmp_path / "future.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE schema_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    for read_only in (False, True):
        with pytest.raises(StoreVersionError, match=r"version 99.*upgrade sentrycam"):
            Store(path, read_only=read_only)


def test_a_duckdb_file_of_something_else_is_not_touched(tmp_path):
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.close()
    with pytest.raises(StoreVersionError, match=r"not a sentrycam store \(tables: \['invoic"):
        Store(path)
    con = duckdb.connect(str(path), read_only=True)
    tables = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    con.close()
    assert tables == [("invoices",)]
