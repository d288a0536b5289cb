"""Retention: which snapshots keep their feature vectors, applied by ingest to a real file, and
the server's default policy (issue 13, point 4)."""

from __future__ import annotations

import numpy as np
import pytest

from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.store import MissingSnapshotError, RetentionSettings, Store
from sentrycam.backend.store.retention import kept
from sentrycam.protocol.messages import Scalars, Snapshot

RUN = "r" * 32
LAYERS = {"fc:input": 16, "features.3": 8}
N = 32


def snapshot(rng: np.random.Generator, step: int) -> Snapshot:
    ids = np.arange(N, dtype=np.int64)
    outputs = {"pred": rng.integers(0, 10, N).astype(np.int64),
               "loss": rng.random(N).astype(np.float32)}
    features = {layer: rng.standard_normal((N, dim)).astype(np.float16)
                for layer, dim in LAYERS.items()}
    return Snapshot(RUN, step, 0, ids, outputs, features)


@pytest.mark.parametrize("newest,history", [(1, 0), (3, 1), (20, 4), (5, 50)])
def test_a_snapshot_the_policy_drops_is_never_wanted_again(newest, history):
    """Deleting is for good: as snapshots arrive, the kept set of the older ones only shrinks,
    the newest ``newest`` are always kept, and so is the first when there is a history."""
    policy = RetentionSettings(newest, history)
    before = kept(1, policy)
    for count in range(2, 600):
        now = kept(count, policy)
        assert now[-newest:].all()
        assert not (now[:-1] & ~before).any(), f"a dropped snapshot came back at {count}"
        assert now[0] == (history > 0 or count <= newest)
        before = now


def test_the_history_grows_with_the_logarithm_of_the_run():
    policy = RetentionSettings(20, 4)
    counts = {m: int(kept(m, policy).sum()) for m in (20, 100, 1_000, 10_000, 100_000)}
    assert counts[20] == 20
    for m, count in counts.items():
        assert count <= 20 + 5 * np.log2(max(m / 20, 1)) + 1, (m, count)
    assert counts[100_000] < 100  # of 100,000 snapshots: a few tens keep their vectors
    assert RetentionSettings(20, 0).max_snapshots == 20 and kept(1_000, RetentionSettings(20)
                                                                 ).sum() == 20


def test_ingest_applies_the_policy_and_keeps_everything_else(tmp_path):
    rng = np.random.default_rng(7)
    path = tmp_path / "runs.duckdb"
    policy = RetentionSettings(max_snapshots=3, history=1)
    with Store(path, retention=policy) as store:
        for seq in range(12):  # one batch per snapshot, as a live run sends them
            store.write([(2 * seq, Scalars(RUN, seq * 10, 0.0, {"loss": 1.0 / (seq + 1)})),
                         (2 * seq + 1, snapshot(rng, seq * 10))])
            for layer in LAYERS:
                store.write_embedding(RUN, layer, seq * 10, np.arange(N),
                                      rng.random((N, 2), dtype=np.float32))
            store.write_quality(RUN, "fc:input", seq * 10, {"trustworthiness": 0.9})
        store.upsert_alert(RUN, {"step": 50, "detector": "loss_spike", "severity": 2,
                                 "message": "m"})
        index = store.snapshot_index(RUN)
        with_features = sorted({row["step"] for row in index if row["has_features"]})
        expected = [step * 10 for step in np.flatnonzero(kept(12, policy))]
        assert with_features == expected
        assert with_features[-3:] == [90, 100, 110] and with_features[0] == 0
        assert len(with_features) < 12 and len(index) == 24  # every snapshot row stays
        dropped = next(step for step in range(0, 120, 10) if step not in with_features)
        with pytest.raises(MissingSnapshotError, match="deleted by the retention setting"):
            store.features(RUN, dropped, "fc:input")
        assert len(store.predictions(RUN, dropped)["sample_id"]) == N
        assert len(store.embedding_index(RUN)) == 24
        assert len(store.embedding(RUN, "features.3", dropped)[0]) == N
        assert len(store.projection_quality(RUN)["step"]) == 12
        assert len(store.scalars(RUN)["step"]) == 12 and len(store.alerts(RUN)) == 1
        sizes = store.storage(RUN)
        assert sizes["runs"][RUN]["feature_bytes"] == len(with_features) * N * 24 * 2
        per_step = {s["step"]: s for s in sizes["snapshots"]}
        assert per_step[dropped]["feature_bytes"] == 0 and per_step[dropped]["other_bytes"] > 0
        assert per_step[0]["feature_bytes"] == N * 24 * 2


def test_the_server_keeps_newest_20_plus_a_history_by_default(tmp_path, monkeypatch):
    for name in ("SENTRYCAM_RETENTION_MAX_SNAPSHOTS", "SENTRYCAM_RETENTION_HISTORY"):
        monkeypatch.delenv(name, raising=False)
    assert ServerSettings(db_path=tmp_path / "a.duckdb").retention == RetentionSettings(20, 4)
    monkeypatch.setenv("SENTRYCAM_RETENTION_MAX_SNAPSHOTS", "0")
    assert ServerSettings(db_path=tmp_path / "a.duckdb").retention.keeps_everything
    monkeypatch.setenv("SENTRYCAM_RETENTION_MAX_SNAPSHOTS", "5")
    monkeypatch.setenv("SENTRYCAM_RETENTION_HISTORY", "0")
    assert ServerSettings(db_path=tmp_path / "a.duckdb").retention == RetentionSettings(5, 0)
    with pytest.raises(ValueError, match="history"):
        RetentionSettings(5, -1)
