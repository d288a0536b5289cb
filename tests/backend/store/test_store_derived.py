"""Derived data in a real store: embeddings, checkpoints, quality metrics, alerts."""

from __future__ import annotations

import numpy as np
import pytest

from sentrycam.backend.store import MissingSnapshotError, Store, UnknownAlertError
from sentrycam.backend.store.derived import CHECKPOINTS_KEPT
from sentrycam.protocol.messages import RunStart

RUN = "derived-run"


@pytest.fixture
def run_store(store: Store) -> Store:
    store.write([(0, RunStart(RUN, "derived", 1.0))])
    return store


def _coords(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


def test_embeddings_round_trip_replace_and_trail(run_store: Store):
    ids = np.array([5, 1, 3], dtype=np.int64)
    for step in (0, 10):
        run_store.write_embedding(RUN, "fc", step, ids, _coords(3, step))
    run_store.write_embedding(RUN, "fc", 10, ids, _coords(3, 99))  # the worker redid step 10
    got_ids, got = run_store.embedding(RUN, "fc", 10)
    order = np.argsort(ids)
    assert got_ids.tolist() == [1, 3, 5]
    np.testing.assert_array_equal(got, _coords(3, 99)[order])
    assert run_store.embedding_index(RUN) == [{"step": 0, "layer": "fc", "n": 3},
                                              {"step": 10, "layer": "fc", "n": 3}]
    trail = run_store.embedding_trails(RUN, "fc", [3])
    assert trail["step"].tolist() == [0, 10] and trail["sample_id"].tolist() == [3, 3]
    assert trail["x"][1] == _coords(3, 99)[2, 0]
    assert run_store.run_summaries(RUN)[0]["n_embeddings"] == 2
    with pytest.raises(MissingSnapshotError, match="no embedding"):
        run_store.embedding(RUN, "fc", 20)


def test_bad_embeddings_are_refused_and_store_nothing(run_store: Store):
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        run_store.write_embedding(RUN, "fc", 0, np.arange(3), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="duplicates"):
        run_store.write_embedding(RUN, "fc", 0, np.array([1, 1]), np.zeros((2, 2)))
    assert run_store.embedding_index(RUN) == []


def test_only_the_newest_checkpoints_are_kept(run_store: Store):
    for step in range(CHECKPOINTS_KEPT + 2):
        run_store.write_embedding(RUN, "fc", step, np.arange(2), _coords(2, step),
                                  checkpoint=f"state-{step}".encode())
    last = CHECKPOINTS_KEPT + 1
    assert run_store.latest_checkpoint(RUN, "fc") == (last, f"state-{last}".encode())
    assert run_store.latest_checkpoint(RUN, "other") is None


def test_quality_metrics_replace_per_snapshot(run_store: Store):
    run_store.write_quality(RUN, "fc", 0, {"nn@15": 0.5, "trust@15": 0.9})
    run_store.write_quality(RUN, "fc", 0, {"nn@15": 0.6})
    assert run_store.projection_quality(RUN) == {"step": [0], "layer": ["fc"],
                                                 "metric": ["nn@15"], "value": [0.6]}


def test_an_alert_is_inserted_then_updated_in_place(run_store: Store):
    alert = {"step": 40, "detector": "loss_divergence", "severity": 1, "magnitude": 3.0,
             "duration": 1, "evidence": {"loss": [1.0, float("nan")]}, "message": "loss rising",
             "suggestion": "lower the learning rate", "confidence": 0.6}
    alert_id = run_store.upsert_alert(RUN, alert)
    assert run_store.upsert_alert(RUN, {**alert, "step": 60, "severity": 3, "duration": 20},
                                  alert_id) == alert_id
    run_store.acknowledge_alert(alert_id)
    [stored] = run_store.alerts(RUN)
    assert (stored["step"], stored["severity"], stored["duration"]) == (40, 3, 20)
    assert stored["acknowledged"] and stored["evidence"] == {"loss": [1.0, "nan"]}  # json_safe text
    assert run_store.alerts(RUN, min_severity=4) == []
    assert run_store.run_summaries(RUN)[0]["n_alerts"] == 1
    with pytest.raises(UnknownAlertError, match="unknown alert_id"):
        run_store.acknowledge_alert(alert_id + 100)
    with pytest.raises(ValueError, match="severity"):
        run_store.upsert_alert(RUN, {**alert, "severity": 7})
