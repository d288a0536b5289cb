"""REST routes, the run list page, /health and token auth, against a real server over HTTP."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from sentrycam.backend.testing import serve_in_thread
from sentrycam.protocol import wire
from sentrycam.protocol.messages import (SCHEMA_VERSION, Event, LayerStats, RunEnd, RunStart,
                                        Scalars, Snapshot, Status)

RUN = "a1b2c3d4"
TOKEN = "s3cret-token"


def _fill(store, run_id: str = RUN, name: str = "cnn-digits", finished: bool = False) -> None:
    """A small run written straight into the store: 4 steps of scalars, stats, a snapshot."""
    messages = [RunStart(run_id, name, 1700000000.0, {"lr": 0.1})]
    for step in range(4):
        messages.append(Scalars(run_id, step, 1700000000.0 + step,
                                {"loss": 1.0 / (step + 1), "lr": 0.1,
                                 "grad_norm": math.inf if step == 3 else 1.0}))
        messages.append(LayerStats(run_id, step, ("conv", "fc"), ("act_std", "dead_frac"),
                                   np.array([[step, np.nan], [0.5, 0.25]], np.float32)))
    ids = np.arange(5, dtype=np.int64)
    messages.append(Snapshot(run_id, 2, 0, ids, {"pred": np.zeros(5, np.int64)},
                             {"fc:input": np.ones((5, 3), np.float16)}))
    messages.append(Event(run_id, 3, 1700000004.0, "note", "spike", {"ratio": math.nan}))
    messages.append(Status(run_id, 3, dropped=7, spooled=0, overhead=0.0123, snapshot_every=2,
                           queue_depth=0))
    if finished:
        messages.append(RunEnd(run_id, 3, "finished"))
    store.write(list(enumerate(messages)))


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def test_runs_list_and_summary_show_what_was_stored(server, http):
    _fill(server.store)
    runs = http.get("/api/runs").json()
    assert [r["run_id"] for r in runs] == [RUN]
    one = http.get(f"/api/runs/{RUN}").json()
    assert (one["name"], one["status"], one["last_step"]) == ("cnn-digits", "running", 3)
    assert (one["n_snapshots"], one["dropped"], one["capture_overhead"]) == (1, 7, 0.0123)
    assert one["config"] == {"lr": 0.1}


def test_scalars_come_back_as_columns_with_filters(server, http):
    _fill(server.store)
    loss = http.get(f"/api/runs/{RUN}/scalars", params={"names": "loss"}).json()
    assert loss["step"] == [0, 1, 2, 3] and loss["name"] == ["loss"] * 4
    assert loss["value"] == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
    recent = http.get(f"/api/runs/{RUN}/scalars",
                      params={"names": "loss,grad_norm", "since_step": 2}).json()
    assert list(zip(recent["step"], recent["name"], recent["value"])) == [
        (2, "grad_norm", 1.0), (2, "loss", pytest.approx(1 / 3)),
        (3, "grad_norm", None), (3, "loss", 0.25)]  # non-finite values go out as null
    assert len(http.get(f"/api/runs/{RUN}/scalars", params={"limit": 5}).json()["step"]) == 5
    assert http.get(f"/api/runs/{RUN}/scalar-names").json() == [
        "grad_norm", "loss", "lr", "sentrycam/dropped", "sentrycam/overhead"]


def test_layer_stats_snapshots_and_events(server, http):
    _fill(server.store)
    stats = http.get(f"/api/runs/{RUN}/layer-stats", params={"since_step": 3}).json()
    rows = set(zip(stats["step"], stats["layer"], stats["stat"], stats["value"]))
    assert rows == {(3, "conv", "act_std", 3.0), (3, "conv", "dead_frac", None),
                    (3, "fc", "act_std", 0.5), (3, "fc", "dead_frac", 0.25)}
    [snapshot] = http.get(f"/api/runs/{RUN}/snapshots").json()
    assert (snapshot["step"], snapshot["layer"], snapshot["n"], snapshot["dim"]) == (2, "fc:input", 5, 3)
    [event] = http.get(f"/api/runs/{RUN}/events").json()
    assert (event["event"], event["message"]) == ("note", "spike")
    assert event["payload"] == {"ratio": None}  # NaN goes out as null


@pytest.mark.parametrize("route", ["", "/scalars", "/scalar-names", "/layer-stats", "/snapshots",
                                   "/events"])
def test_unknown_run_is_a_404_naming_it(server, http, route):
    answer = http.get(f"/api/runs/no-such-run{route}")
    assert answer.status_code == 404
    assert "no-such-run" in answer.json()["detail"]


@pytest.mark.parametrize("query", [{"since_step": -1}, {"since_step": "soon"}, {"limit": 0},
                                   {"limit": "all"}])
def test_bad_queries_are_refused_without_a_server_error(server, http, query):
    _fill(server.store)
    answer = http.get(f"/api/runs/{RUN}/scalars", params=query)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"][-1] in query


def test_health_reports_versions_db_and_ingest(server, http):
    health = http.get("/health").json()
    assert health["status"] == "ok"
    assert health["message_schema"] == SCHEMA_VERSION
    assert health["schema_version"] == server.store.schema_version
    assert health["db"] == str(server.settings.db_path.absolute())
    assert health["ingest"]["running"] and health["ingest"]["committed"] == 0
    assert health["token_required"] is False and health["uptime_s"] >= 0


def test_openapi_schema_is_published(http):
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/health", "/api/runs", "/api/runs/{run_id}/scalars"} <= set(paths)


def test_root_serves_the_dashboard_page(server, http):
    """The Panel page and its BokehJS come from this server (what it draws: tests/e2e)."""
    page = http.get("/")
    assert page.status_code == 200 and "<title>sentrycam</title>" in page.text
    script = next(part.split('"')[0] for part in page.text.split('src="')[1:]
                  if "bokeh.min.js" in part)
    assert http.get(script).status_code == 200


# ---- token --------------------------------------------------------------------------------------

@pytest.fixture
def guarded(make_settings, store):
    with serve_in_thread(make_settings(token=TOKEN), store) as running:
        yield running


def test_without_the_token_every_route_but_health_is_401(guarded):
    _fill(guarded.store)
    with httpx.Client(base_url=guarded.url) as http:
        for path in ("/api/runs", f"/api/runs/{RUN}/scalars", "/", "/openapi.json"):
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert "requires a token" in refused.json()["detail"]
        wrong = http.get("/api/runs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "does not match" in wrong.json()["detail"]
        assert http.get("/health").json()["token_required"] is True
        by_header = http.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert [r["run_id"] for r in by_header.json()] == [RUN]
        assert "<title>sentrycam</title>" in http.get("/", params={"token": TOKEN}).text


def test_websocket_ingest_needs_the_token_too(guarded):
    with pytest.raises(InvalidStatus) as refused:
        with connect(guarded.ws_url):
            pass
    assert refused.value.response.status_code == 401
    assert b"requires a token" in refused.value.response.body
    frame = wire.encode(RunStart(RUN, "with-token", 1.0), 0, 1.0)
    with connect(f"{guarded.ws_url}?token={TOKEN}") as ws:
        ws.send(frame)
        assert '"type": "ack"' in ws.recv(timeout=10)
    with connect(guarded.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        ws.send(frame)
        assert '"type": "ack"' in ws.recv(timeout=10)
    assert guarded.store.run_summaries(RUN)[0]["name"] == "with-token"
