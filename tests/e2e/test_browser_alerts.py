"""A geometry alert raised by the real audit engine on a real training run shows up in the
dashboard of a real headless Chromium: in the alerts table, on the curves and on the embedding
timeline (where a click near a tick shows that snapshot).

The run trains the seeded digits MLP with capture attached. Once the geometry detectors have
calibrated on the run's early snapshots (most judge from the 5th snapshot of a layer on: see
``SNAPSHOT_CALIBRATION`` in backend/audit/detectors/outputs.py), the test collapses the
classifier's input onto one direction: a forward hook on the last hidden ReLU projects every
sample's representation onto a fixed unit vector, so the classes that the layer had separated
fall onto one line. Training goes on through the collapsed representation.
"""

from __future__ import annotations

import httpx
import pytest
import torch

from sentrycam import capture
from sentrycam.backend.audit.detectors.geometry import METRICS
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.testing import StandInProjector, isolate_environment, serve_in_thread
from sentrycam.frontend.timeline_view import FIGURE_NAME
from tests.e2e.browser import click_plot, latest_step, source_data, wait_until

pytestmark = pytest.mark.browser

EVERY = 5
#: Steps trained before the collapse: snapshots at steps 0..45. Geometry is judged once the
#: model has left chance level (mean probe confidence at least twice 1/10: this MLP passes it
#: at about step 30), and the watches calibrate on 4 snapshots (the effective rank on 3).
HEALTHY_STEPS = 50
#: Steps trained with the collapsed representation: snapshots at steps 50 and 55.
COLLAPSED_STEPS = 10
PROBE_SIZE = 300
_NAMES = {name for name, *_ in METRICS.values()} | {"class_collapse"}
#: Alert names of the ``geometry`` (features) and ``map_geometry`` (2D map) detectors.
GEOMETRY_ALERTS = _NAMES | {f"map_{name}" for name in _NAMES}


@pytest.fixture
def audited_server(tmp_path, monkeypatch):
    """A real server with its audit engine on and no projector worker (the stand-in writes a
    PCA map of each snapshot instead, so the embedding view has maps at once)."""
    isolate_environment(monkeypatch)
    settings = ServerSettings(db_path=tmp_path / "alerts.duckdb", port=0, projector=False,
                              audit=True)
    with serve_in_thread(settings) as server:
        with StandInProjector(server.app):
            yield server


def collapse_onto_one_direction(module: torch.nn.Module, width: int, seed: int = 0) -> None:
    """From now on ``module`` outputs each sample's projection onto one fixed unit vector: a
    rank-1 representation, whatever the sample's class."""
    direction = torch.randn(width, generator=torch.Generator().manual_seed(seed))
    direction = direction / direction.norm()
    module.register_forward_hook(lambda _m, _inputs, out: (out @ direction)[:, None] * direction)


def _geometry_alerts(url: str, run_id: str, layer: str, since: int = 0) -> list[dict]:
    alerts = httpx.get(f"{url}/api/runs/{run_id}/alerts", timeout=10).json()
    return [a for a in alerts if a["detector"] in GEOMETRY_ALERTS and a["layer"] == layer
            and a["step"] >= since]


def test_a_geometry_alert_shows_in_the_list_on_the_curves_and_on_the_embedding_timeline(
        audited_server, page, trainer):
    url = audited_server.url
    model = trainer.model
    run = capture.attach(model, (trainer.data.x_train[:PROBE_SIZE],
                                 trainer.data.y_train[:PROBE_SIZE]),
                         url=url, every=EVERY, overhead_budget=None, optimizer=trainer.optimizer,
                         criterion=trainer.criterion, run_name="geometry-collapse")
    trainer.train(HEALTHY_STEPS)
    page.goto(f"{url}/?run={run.run_id}")
    wait_until(lambda: (latest_step(page) or 0) >= HEALTHY_STEPS - 1,
               what="the healthy steps to arrive")
    wait_until(lambda: len((source_data(page, "sc-embedding-timeline-ticks") or {})
                           .get("step", [])) >= 2, what="map ticks on the embedding timeline")
    layer = page.locator(".sc-embedding select").first.input_value()
    assert layer == "net.5:input"  # the classifier's input, shown by default
    assert audited_server.app.state.audit.wait_idle(30)
    assert not _geometry_alerts(url, run.run_id, layer)  # the healthy run raised none

    collapse_onto_one_direction(model.net[4], width=model.net[5].in_features)
    trainer.train(COLLAPSED_STEPS)
    wait_until(lambda: _geometry_alerts(url, run.run_id, layer, HEALTHY_STEPS), 60.0,
               "the audit engine to raise a geometry alert on the collapsed layer")
    alert = _geometry_alerts(url, run.run_id, layer, HEALTHY_STEPS)[0]
    assert alert["severity"] >= 2, alert

    rows = page.locator(".sc-alerts .tabulator-row", has_text=alert["detector"])
    wait_until(lambda: rows.count() >= 1, what=f"a {alert['detector']} row in the alerts table")
    wait_until(lambda: alert["step"] in source_data(page, "sc-curve-alerts")["step"],
               what="the alert's marker on the curves")
    wait_until(lambda: alert["step"] in source_data(page, "sc-embedding-timeline-alerts")["step"],
               what="the alert's marker on the embedding timeline")

    click_plot(page, FIGURE_NAME, 10.8)  # near the tick of step 10: its map is shown
    wait_until(lambda: page.locator(".sc-map-step").first.inner_text().strip() == "step 10",
               what="a click on the timeline to show the snapshot of step 10")
    assert source_data(page, "sc-embedding-timeline-shown")["step"] == [10]
    run.detach()
