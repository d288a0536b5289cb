"""The audit engine inside a real server: runs stream in through capture.attach(url=...), alerts
are stored, announced on the change feed, served over REST, and inactive detectors say why."""

from __future__ import annotations

import http.server
import json
import threading

import httpx
import pytest

from sentrycam.backend.audit.detectors.loss import LossDivergence
from tests.backend.audit.trainer import settle, train_streamed
from sentrycam.backend.testing import serve_in_thread

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("budget, steps, spike_at, within", [
    (None, 220, 150, 10),  # every step a full one: a Scalars message per step
    # Minimum cadence: most steps' scalars come in ScalarSeries batches. Confirmed at step 1215
    # alike when each step is its own Scalars (main before series): telemetry is sparse here.
    (1e-6, 1300, 1200, 20),
], ids=["per-step", "series"])
def test_lr_spike_raises_a_stored_announced_alert(make_settings, budget, steps, spike_at,
                                                  within):
    announced = []
    with serve_in_thread(make_settings()) as server:
        server.app.state.feed.subscribe(
            lambda changes: announced.extend(c for c in changes if c.kind == "alert"),
            name="test")
        run_id = train_streamed(server.url, steps=steps, spike_at=spike_at,
                                overhead_budget=budget)
        settle(server)
        response = httpx.get(f"{server.url}/api/runs/{run_id}/alerts", params={"min_severity": 2})
        assert response.status_code == 200
        alerts = response.json()
        assert alerts, "an LR spike of 30x went unnoticed"
        first = min(a["evidence"]["confirmed_step"] for a in alerts)
        assert spike_at <= first <= spike_at + within
        assert all(a["step"] >= spike_at - 10 for a in alerts)  # nothing before the spike
        alert = alerts[0]
        assert alert["suggestion"].startswith("Hypothesis (confidence")
        assert alert["evidence"]["steps"] and alert["magnitude"] is not None
        assert {c.message["alert_id"] for c in announced} >= {a["alert_id"] for a in alerts}
        stats = server.app.state.audit.stats()
        assert stats["errors"] == 0 and stats["dropped"] == 0


def test_persisting_alert_updates_instead_of_repeating(make_settings):
    with serve_in_thread(make_settings()) as server:
        run_id = train_streamed(server.url, steps=220, spike_at=120)
        settle(server)
        alerts = server.store.alerts(run_id, min_severity=1)
        keys = [(a["detector"], a["layer"]) for a in alerts]
        # Each (detector, layer) has one alert per episode: an episode ends only after quiet
        # observations, so the same pair never opens twice within a few steps.
        for key in set(keys):
            steps = sorted(a["step"] for a in alerts if (a["detector"], a["layer"]) == key)
            assert all(b - a > 5 for a, b in zip(steps, steps[1:])), (key, steps)
        assert any(a["duration"] > 0 for a in alerts)


def test_status_reports_inactive_detectors_and_why(make_settings):
    with serve_in_thread(make_settings()) as server:
        run_id = train_streamed(server.url, steps=60, labels=False)
        settle(server)
        status = httpx.get(f"{server.url}/api/runs/{run_id}/audit").json()
        inactive = status["inactive"]
        assert "labels" in inactive["geometry"]
        assert "val_loss" in inactive["overfitting"]
        assert inactive["map_geometry"].startswith("no embeddings yet")
        assert "loss_divergence" in status["active"]
        assert httpx.get(f"{server.url}/api/runs/nope/audit").status_code == 404


def test_a_failing_detector_is_counted_and_the_engine_carries_on(make_settings, monkeypatch):
    def broken(self, kind, item):
        raise RuntimeError("detector bug")

    monkeypatch.setattr(LossDivergence, "observe", broken)  # this process: the thread engine
    with serve_in_thread(make_settings(audit_engine="thread")) as server:
        run_id = train_streamed(server.url, steps=220, spike_at=150)
        settle(server)
        status = server.app.state.audit.run_status(run_id)
        assert status["errors"] > 0
        assert server.store.alerts(run_id, min_severity=2), "other detectors still alert"
        assert server.app.state.audit.alive()


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_is_opt_in_and_posts_alerts_at_the_configured_severity(make_settings):
    hook = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hook.server_address[1]}/alerts"
    try:
        with serve_in_thread(make_settings()) as server:
            assert server.app.state.alert_webhook is None  # default: report only
        with serve_in_thread(make_settings(alert_webhook_url=url,
                                           alert_webhook_min_severity=2)) as server:
            run_id = train_streamed(server.url, steps=200, spike_at=150)
            settle(server)
            action = server.app.state.alert_webhook
            for _ in range(100):
                if action.counts["sent"]:
                    break
                threading.Event().wait(0.05)
        posted = [p["alert"] for p in _Hook.received]
        assert posted and all(a["severity"] >= 2 and a["run_id"] == run_id for a in posted)
    finally:
        hook.shutdown()


def test_bad_webhook_url_is_refused_clearly(make_settings):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="http:// or https://"):
        make_settings(alert_webhook_url="ftp://example.invalid/hook")


def test_map_geometry_activates_when_embeddings_arrive(make_settings):
    """The projector's announcement of a stored 2D map switches the map detectors on."""
    import numpy as np

    from sentrycam.backend.feed import Change

    with serve_in_thread(make_settings()) as server:
        run_id = train_streamed(server.url, steps=100)
        settle(server)
        store = server.store
        assert "map_geometry" in server.app.state.audit.run_status(run_id)["inactive"]
        last = store.snapshot_index(run_id)[-1]
        ids, features = store.features(run_id, last["step"], last["layer"])
        for step in range(0, 8 * 25, 25):  # a stable map, drawn from the features
            store.write_embedding(run_id, last["layer"], step, ids,
                                  features[:, :2].astype(np.float32))
            server.app.state.feed.publish([Change(run_id, "embedding", step, last["layer"])])
        assert server.app.state.audit.wait_idle(30)
        status = server.app.state.audit.run_status(run_id)
        assert "map_geometry" in status["active"]
        assert last["layer"] in status["geometry"]["map_geometry"]
