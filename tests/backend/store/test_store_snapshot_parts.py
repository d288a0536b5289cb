"""Snapshots sent in row chunks: shown only whole, never stored twice, unfinished ones hidden."""

from __future__ import annotations

import dataclasses

import duckdb
import numpy as np
import pytest

from sentrycam.backend.store import MissingSnapshotError, Store
from sentrycam.protocol.chunks import snapshot_chunks
from sentrycam.protocol.messages import RunEnd, RunStart, Snapshot

RUN = "p" * 32
N, D = 50, 6


def _snapshot(step: int, seed: int = 0) -> Snapshot:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((N, D)).astype(np.float16)
    features[3, 1] = np.inf
    return Snapshot(RUN, step, 2, rng.permutation(N).astype(np.int64) + 100,
                    {"pred": rng.integers(0, 3, N), "loss": rng.random(N).astype(np.float32)},
                    {"fc": features, "head": rng.standard_normal((N, 2)).astype(np.float16)},
                    {"fc": 4})


def _parts(snapshot: Snapshot) -> list[Snapshot]:
    parts = snapshot_chunks(snapshot, target_bytes=200)  # 8 + 8 + 4 + 12 + 4 bytes a row: 5 rows
    assert len(parts) == 10
    return parts


def _assert_stored_whole(store: Store, snapshot: Snapshot) -> None:
    order = np.argsort(snapshot.sample_ids)
    for layer, features in snapshot.features.items():
        ids, stored = store.features(RUN, snapshot.step, layer)
        np.testing.assert_array_equal(ids, snapshot.sample_ids[order])
        np.testing.assert_array_equal(stored, features[order])
    predictions = store.predictions(RUN, snapshot.step)
    np.testing.assert_array_equal(predictions["pred"], snapshot.outputs["pred"][order])
    np.testing.assert_array_equal(predictions["loss"], snapshot.outputs["loss"][order])
    index = {row["layer"]: row for row in store.snapshot_index(RUN)
             if row["step"] == snapshot.step}
    assert {layer: (row["n"], row["dim"], row["nonfinite"]) for layer, row in index.items()} \
        == {"fc": (N, D, 4), "head": (N, 2, 0)}


def _pending_rows(path) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return sum(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                   for table in ("pending_snapshots", "pending_features", "pending_predictions"))
    finally:
        con.close()


def test_a_snapshot_in_parts_appears_whole_with_its_last_part(tmp_path):
    snapshot = _snapshot(10)
    parts = _parts(snapshot)
    with Store(tmp_path / "s.duckdb") as store:
        store.write([(0, RunStart(RUN, "r", 0.0))])
        stored: list = []
        store.write([(1 + i, part) for i, part in enumerate(parts[:-1])], stored=stored)
        assert stored == [] and store.snapshot_index(RUN) == []
        with pytest.raises(MissingSnapshotError):
            store.features(RUN, 10, "fc")
        store.write([(len(parts), parts[-1])], stored=stored)
        (whole,) = stored  # the change feed gets the snapshot once, whole
        assert whole.is_whole and len(whole.sample_ids) == N and whole.nonfinite["fc"] == 4
        _assert_stored_whole(store, snapshot)
    assert _pending_rows(tmp_path / "s.duckdb") == 0


def test_parts_sent_again_or_after_a_restart_are_stored_once(tmp_path):
    snapshot = _snapshot(10)
    parts = _parts(snapshot)
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        assert store.write([(i, part) for i, part in enumerate(parts[:3])], refused=[]) \
            == {RUN: 2}
    with Store(path) as store:  # a restarted server; the client resends what was not acked
        refused: list = []
        committed = store.write([(i, part) for i, part in enumerate(parts)], refused=refused)
        assert refused == [] and committed == {RUN: len(parts) - 1}
        _assert_stored_whole(store, snapshot)
        store.write([(len(parts) + i, part) for i, part in enumerate(parts)])  # a new take
        _assert_stored_whole(store, snapshot)  # replaced, not doubled


def test_a_part_that_does_not_continue_its_snapshot_is_refused(tmp_path):
    parts = _parts(_snapshot(10))
    with Store(tmp_path / "s.duckdb") as store:
        store.write([(0, parts[0])], refused=[])
        refused: list = []
        assert store.write([(1, parts[2])], refused=refused) == {RUN: 0}
        (refusal,) = refused
        assert "rows up to 5 are stored" in refusal.problem and refusal.expected_seq is None
        wrong_width = dataclasses.replace(parts[1], features={
            "fc": parts[1].features["fc"][:, :2], "head": parts[1].features["head"]})
        store.write([(1, wrong_width)], refused=refused)
        assert "feature sizes" in refused[-1].problem
        with pytest.raises(ValueError, match="the next part starts there"):  # trusted: an error
            store.write([(5, parts[3])])
        assert store.snapshot_index(RUN) == []


def test_an_unfinished_snapshot_stays_hidden_and_goes_at_the_next_or_the_end(tmp_path):
    path = tmp_path / "s.duckdb"
    first, second = _parts(_snapshot(10)), _parts(_snapshot(20, seed=1))
    with Store(path) as store:
        store.write([(0, first[0]), (1, first[1])])  # then the trainer was killed
        store.write([(2 + i, part) for i, part in enumerate(second)])
        assert {row["step"] for row in store.snapshot_index(RUN)} == {20}
        _assert_stored_whole(store, _snapshot(20, seed=1))
        store.write([(12, second[0])])
    assert _pending_rows(path) > 0
    with Store(path) as store:
        store.write([(13, RunEnd(RUN, 30, "failed"))])
        assert {row["step"] for row in store.snapshot_index(RUN)} == {20}
    assert _pending_rows(path) == 0
