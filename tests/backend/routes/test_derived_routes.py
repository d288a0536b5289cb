"""REST reads of derived data over a real server, and the cluster-health numbers."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from sentrycam.backend.geometry import cluster_health
from sentrycam.frontend.client import ApiClient
from tests.live_server import LAYER, N_PROBE, RUN, project, quality, snapshot, start_run


def test_cluster_health_measures_spread_and_separation():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, -1], 100)
    coords = np.concatenate([rng.normal((0, 0), 1, (100, 2)), rng.normal((10, 0), 1, (100, 2)),
                             rng.normal((50, 50), 1, (100, 2))])
    intra, inter = cluster_health(coords, labels)
    assert intra == pytest.approx(2.0, rel=0.2)  # two unit-variance axes
    assert inter == pytest.approx(10.0, rel=0.05)  # the unlabelled cloud is left out
    assert np.isnan(cluster_health(coords[:100], labels[:100])[0])


@pytest.fixture
def filled(server, ingest):
    start_run(ingest, steps=3)
    for step in (0, 2):
        snapshot(ingest, step)
        project(server, step)
    return server


def test_embedding_index_map_trails_quality_and_health(filled):
    with httpx.Client(base_url=filled.url, timeout=10) as http:
        index = http.get(f"/api/runs/{RUN}/embeddings").json()
        assert index == [{"step": 0, "layer": LAYER, "n": N_PROBE},
                         {"step": 2, "layer": LAYER, "n": N_PROBE}]
        one = http.get(f"/api/runs/{RUN}/embedding", params={"layer": LAYER, "step": 2}).json()
        assert len(one["x"]) == N_PROBE and one["sample_id"] == list(range(N_PROBE))
        missing = http.get(f"/api/runs/{RUN}/embedding", params={"layer": LAYER, "step": 1})
        assert missing.status_code == 404 and "embedding_index" in missing.json()["detail"]
        trails = http.get(f"/api/runs/{RUN}/trails",
                          params={"layer": LAYER, "sample_ids": "3,4"}).json()
        assert trails["sample_id"] == [3, 3, 4, 4] and trails["step"] == [0, 2, 0, 2]
        bad = http.get(f"/api/runs/{RUN}/trails", params={"layer": LAYER, "sample_ids": "x"})
        assert bad.status_code == 422 and "comma-separated" in bad.json()["detail"][0]["msg"]
        stored = http.get(f"/api/runs/{RUN}/quality").json()
        assert dict(zip(zip(stored["step"], stored["metric"]), stored["value"])) == pytest.approx(
            {(step, name): value for step in (0, 2) for name, value in quality(step).items()})
        health = http.get(f"/api/runs/{RUN}/cluster-health", params={"layer": LAYER}).json()
        assert health["step"] == [0, 2] and all(i < j for i, j in zip(health["intra"],
                                                                      health["inter"]))
        assert health["classes"] == [0, 1, 2, 3] and len(health["spread"][0]) == 4
        assert http.get("/api/runs/nope/embeddings").status_code == 404


def test_binary_map_carries_outputs_for_replay(filled):
    client = ApiClient(filled.url)
    header, arrays = client.embedding(RUN, LAYER, 0)
    client.close()
    assert header.type == "embedding" and header.step == 0
    assert arrays["xy"].shape == (N_PROBE, 2) and arrays["confidence"][0] == pytest.approx(0.8)


def test_alerts_list_and_acknowledge(filled):
    alert_id = filled.store.upsert_alert(RUN, {"step": 2, "detector": "dead_units",
                                               "severity": 1, "message": "units stopped"})
    with httpx.Client(base_url=filled.url, timeout=10) as http:
        listed = http.get(f"/api/runs/{RUN}/alerts").json()
        assert [a["alert_id"] for a in listed] == [alert_id] and not listed[0]["acknowledged"]
        assert http.get("/api/alerts", params={"min_severity": 2}).json() == []
        assert http.post(f"/api/alerts/{alert_id}/acknowledge").status_code == 200
        assert http.get(f"/api/runs/{RUN}/alerts").json()[0]["acknowledged"] is True
        unknown = http.post("/api/alerts/999/acknowledge")
        assert unknown.status_code == 404 and "999" in unknown.json()["detail"]
