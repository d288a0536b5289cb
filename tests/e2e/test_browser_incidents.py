"""An injected failure shows as one incident with its diagnosis in a real headless Chromium: in
the incident list (expandable to its alerts), shaded on the curves and on the embedding
timeline. The page is open before the run starts, so the incident arrives live.

The failure comes from the scenario harness (benchmarks/scenarios.py), as in
tests/backend/audit/test_incidents_runs.py: the learning rate of the seeded MLP jumps at step
``AT``; the audit engine raises its alerts, the server groups them into an incident and
diagnoses it (``GET /api/runs/{id}/incidents``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.testing import isolate_environment, serve_in_thread
from sentrycam.frontend.incident_view import SHOWN_ALERTS
from tests.e2e.browser import source_data, wait_until

pytestmark = pytest.mark.browser

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from scenarios import settle, train_run  # noqa: E402

STEPS, AT = 360, 180
KIND, DIAGNOSIS = "lr_spike", "instability"


@pytest.fixture
def audited_server(tmp_path, monkeypatch):
    """A real server with its audit engine on and no projector (as in the incident test of the
    audit engine: with the stand-in projector's PCA maps, map detectors join the incident and
    its diagnosis abstains). The embedding timeline shows the incident without map ticks."""
    isolate_environment(monkeypatch)
    settings = ServerSettings(db_path=tmp_path / "incidents.duckdb", port=0, projector=False,
                              audit=True)
    with serve_in_thread(settings) as server:
        yield server


def test_an_injected_failure_is_one_incident_in_the_list_on_the_curves_and_timeline(
        audited_server, page):
    url = audited_server.url
    page.goto(url)  # no run yet: the page shows the newest run once it starts
    run_id = train_run(url, "mlp", KIND, seed=5, steps=STEPS, at=AT)["run_id"]
    settle(audited_server)
    incidents = httpx.get(f"{url}/api/runs/{run_id}/incidents", timeout=10).json()
    assert len(incidents) == 1, incidents
    incident = incidents[0]
    assert incident["diagnosis"] == DIAGNOSIS and incident["start_step"] >= AT - 5, incident

    rows = page.locator(".sc-incidents .tabulator-row")
    wait_until(lambda: rows.count() == 1, what="the incident's row")
    # The row appears while the incident still grows (its alerts stay open to the run's end):
    # wait for the page to catch up with the settled answer, not the first one it drew.
    steps = f"{incident['start_step']}-{incident['end_step']}"
    wait_until(lambda: steps in rows.first.inner_text(), what=f"the row's steps {steps}")
    text = rows.first.inner_text()
    assert f"{DIAGNOSIS} (confidence {incident['confidence']:.2f}" in text
    assert incident["suggestion"][:40] in " ".join(text.split())
    table = page.locator(".sc-incidents .tabulator-tableholder").first
    assert table.evaluate("e => e.scrollWidth <= e.clientWidth + 1")  # no sideways scrolling

    rows.first.locator(".tabulator-cell", has_text="►").click()  # expand: its alerts
    alerts = page.locator(".sc-incidents .sc-incident-alert")
    shown = min(len(incident["alert_ids"]), SHOWN_ALERTS)
    wait_until(lambda: alerts.count() == shown, what="its first alerts listed")
    assert incident["detectors"][0] in alerts.first.inner_text()

    span = {"start": [incident["start_step"]], "end": [incident["end_step"] + 1]}
    for name in ("sc-curve-incidents", "sc-embedding-timeline-incidents"):
        wait_until(lambda: {k: (source_data(page, name) or {}).get(k) for k in span} == span,
                   what=f"the incident's span in {name}")
        assert DIAGNOSIS in source_data(page, name)["diagnosis"][0]
