"""Compaction of a real store file: the policy applied to every run or one, the file rewritten
smaller, and everything a dashboard, a replay or the audit reads still there."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sentrycam.backend.audit.replay import replay_run
from sentrycam.backend.store import RetentionSettings, Store, StoreLockedError
from sentrycam.backend.store.compact import compact_file
from sentrycam.protocol.messages import RunEnd, RunStart, Scalars, Snapshot

RUNS = ("a" * 32, "b" * 32)
N, DIM, SNAPSHOTS = 200, 64, 30
KEPT_TABLES = ("runs", "snapshots", "predictions", "embeddings", "scalars", "alerts",
               "projection_quality", "projector_checkpoints", "schema_meta")


def _fill(path, rng) -> None:
    """Two finished runs of SNAPSHOTS snapshots of one layer, each with a map and a loss."""
    with Store(path) as store:
        for run_id in RUNS:
            batch = [(0, RunStart(run_id, run_id[:4], 1.0, {}))]
            for i in range(SNAPSHOTS):
                outputs = {"loss": rng.random(N).astype(np.float32)}
                features = {"fc": rng.standard_normal((N, DIM)).astype(np.float16)}
                batch += [(2 * i + 1, Scalars(run_id, i * 10, 0.0, {"loss": 1.0 / (i + 1)})),
                          (2 * i + 2, Snapshot(run_id, i * 10, 0, np.arange(N), outputs,
                                               features))]
            batch.append((len(batch), RunEnd(run_id, SNAPSHOTS * 10, "finished")))
            store.write(batch)
            for i in range(SNAPSHOTS):
                store.write_embedding(run_id, "fc", i * 10, np.arange(N),
                                      rng.random((N, 2), dtype=np.float32), checkpoint=b"s" * 99)
            store.upsert_alert(run_id, {"step": 100, "detector": "loss_spike", "severity": 2})


def _counts(path) -> dict[str, int]:
    with Store(path, read_only=True) as store, store._cursor() as cur:
        return {table: cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in (*KEPT_TABLES, "features")}


def _feature_bytes(path) -> int:
    with Store(path, read_only=True) as store:
        return sum(run["feature_bytes"] for run in store.storage()["runs"].values())


@pytest.fixture
def filled(tmp_path):
    path = tmp_path / "runs.duckdb"
    _fill(path, np.random.default_rng(3))
    return path


def test_compaction_shrinks_the_file_and_keeps_every_other_row(filled):
    before, feature_bytes = _counts(filled), _feature_bytes(filled)
    done = compact_file(filled, RetentionSettings(max_snapshots=4, history=1))
    after = _counts(filled)
    assert {t: after[t] for t in KEPT_TABLES} == {t: before[t] for t in KEPT_TABLES}
    assert done.snapshots_dropped == 2 * (SNAPSHOTS - after["features"] // N // 2)
    assert after["features"] < before["features"] / 3
    assert done.bytes_after == os.path.getsize(filled)
    # The file shrinks by about the bytes of the vectors deleted (DuckDB pages: not exactly).
    deleted = feature_bytes - _feature_bytes(filled)
    assert deleted == done.snapshots_dropped * N * DIM * 2
    assert done.bytes_before - done.bytes_after > 0.8 * deleted
    assert not os.path.exists(f"{filled}.wal") and not os.path.exists(f"{filled}.compacting")
    with Store(filled) as store:  # read-write again: the schema checks pass, ids go on
        new_id = store.upsert_alert(RUNS[0], {"step": 200, "detector": "loss_spike",
                                              "severity": 1})
        assert new_id == 3  # after the two alerts copied with their sequence
        assert store.latest_checkpoint(RUNS[0], "fc")[0] == (SNAPSHOTS - 1) * 10
        _alerts, status = replay_run(store, RUNS[1])  # the audit replays the compacted run
        assert status["last_step"] == (SNAPSHOTS - 1) * 10, status


def test_compacting_one_run_leaves_the_other_whole(filled):
    compact_file(filled, RetentionSettings(max_snapshots=2), RUNS[1])
    with Store(filled, read_only=True) as store:
        sizes = store.storage()["runs"]
        assert sizes[RUNS[0]]["snapshots_with_features"] == SNAPSHOTS
        assert sizes[RUNS[1]]["snapshots_with_features"] == 2
        assert sizes[RUNS[1]]["feature_bytes"] == 2 * N * DIM * 2
        assert sizes[RUNS[0]]["other_bytes"] == sizes[RUNS[1]]["other_bytes"]


def test_a_file_another_process_holds_is_left_alone(filled):
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; "
                               f"c = duckdb.connect({str(filled)!r}); print('held', flush=True);"
                               " sys.stdin.read()"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        size = os.path.getsize(filled)
        with pytest.raises(StoreLockedError, match="another process holds it"):
            compact_file(filled, RetentionSettings(max_snapshots=2))
        assert os.path.getsize(filled) == size
    finally:
        holder.communicate("", timeout=30)
