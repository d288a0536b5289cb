"""Incidents of real runs: capture -> server -> audit engine -> stored alerts -> incidents, read
through the route and the CLI. The failures come from the scenario harness
(benchmarks/scenarios.py); the healthy control is the built-in demo. Seeds differ from the run
the diagnosis weights were looked at on (scenario mlp seed 0)."""

from __future__ import annotations

import json

import httpx
import pytest

from sentrycam import capture
from sentrycam.backend.cli import main
from sentrycam.capture import demo

pytestmark = pytest.mark.slow

from scenarios import settle, train_run  # noqa: E402  (benchmarks/: see conftest.py)

STEPS, AT = 360, 180


def _incidents(server, run_id: str) -> list[dict]:
    response = httpx.get(f"{server.url}/api/runs/{run_id}/incidents")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def server(scenario_server):
    return scenario_server


@pytest.mark.parametrize(("kind", "diagnosis"), [("lr_spike", "instability"),
                                                 ("vanishing_gradients", "stalled")])
def test_an_injected_failure_is_one_incident_with_its_cause(server, kind, diagnosis):
    run_id = train_run(server.url, "mlp", kind, seed=5, steps=STEPS, at=AT)["run_id"]
    settle(server)
    found = _incidents(server, run_id)
    assert found, f"{kind}: no incident"
    first = found[0]
    assert first["start_step"] >= AT - 5, "an incident before the failure was injected"
    assert first["diagnosis"] == diagnosis, first
    assert first["confirmed_step"] <= first["decided_step"] <= first["end_step"]
    stored = {a["alert_id"] for a in server.store.alerts(run_id)}
    assert set(first["alert_ids"]) <= stored


def test_the_healthy_demo_shows_at_most_one_incident(server, capsys):
    runs = []

    def attach(model, **parts):  # as `sentrycam demo` attaches (no projector here)
        runs.append(capture.attach(model, url=server.url, every=25, overhead_budget=None,
                                   run_name="demo-cnn-seed1", **parts))
        return runs[-1]

    demo.train(300, attach=attach, seed=1)
    settle(server)
    run_id = runs[0].run_id
    found = _incidents(server, run_id)
    assert len(found) <= 1, found
    assert main(["incidents", "--url", server.url, "--run", "demo-cnn-seed1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == found
