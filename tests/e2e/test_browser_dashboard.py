"""The live dashboard in a real headless Chromium, against real servers and real training."""

from __future__ import annotations

import logging
import os
import re

import httpx
import numpy as np
import pytest

from sentrycam import capture
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.testing import StandInProjector, serve_in_thread
from tests.e2e.browser import latest_step, points, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.projector]  # the real worker draws the maps
PARTS = ("sc-embedding", "sc-heatmap", "sc-curves", "sc-alerts", "sc-latest-step")
MAP_TIMEOUT_S = 180.0  # a real projector worker warms up (numba JIT) before its first map
WRITE_TOKEN, READ_TOKEN = "s3cret-write", "s3cret-read"


@pytest.fixture
def live_server(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("SENTRYCAM_")]:
        monkeypatch.delenv(name)
    with serve_in_thread(ServerSettings(db_path=tmp_path / "live.duckdb", port=0)) as server:
        with StandInProjector(server.app):
            yield server


def _probe(trainer, n: int):
    return trainer.data.x_train[:n], trainer.data.y_train[:n]


def _maps(url: str, run_id: str) -> list[dict]:
    return httpx.get(f"{url}/api/runs/{run_id}/embeddings", timeout=10).json()


def test_dashboard_follows_a_training_run_and_replays_earlier_snapshots(live_server, page,
                                                                        trainer):
    # A fixed schedule (no budget): every snapshot maps the whole probe.
    run = capture.attach(trainer.model, _probe(trainer, 300), url=live_server.url,
                         every=10, overhead_budget=None, optimizer=trainer.optimizer,
                         criterion=trainer.criterion, run_name="browser-live")
    trainer.train(30)
    page.goto(live_server.url)
    for part in PARTS:
        page.locator(f".{part}").first.wait_for(state="attached")
    wait_until(lambda: latest_step(page) is not None, what="the first step to arrive")
    first_seen = latest_step(page)
    trainer.train(30)
    wait_until(lambda: latest_step(page) > first_seen,
               what=f"the latest step to advance from {first_seen} (training is at step 59)")

    wait_until(lambda: len(_maps(live_server.url, run.run_id)) >= 3, MAP_TIMEOUT_S, "maps")
    # Until the classifier's input has a map the view may show another layer and then move
    # to it; read the layer shown only once both projected layers have maps.
    # Two maps of each: with one map of the layer shown the player already stands at its
    # first position, so the replay below would change nothing and the view, still live,
    # would move on to the layer's next map.
    wait_until(lambda: _fewest_maps_per_layer(live_server.url, run.run_id, layers=2) >= 2,
               MAP_TIMEOUT_S, "two maps of each of both projected layers")
    wait_until(lambda: points(page)["n"] == run.probe_size, what="the probe's points drawn")
    assert run.probe_size == 300

    options = page.locator(".sc-embedding select").first.locator("option")
    wait_until(lambda: options.count() >= 2, what="both layers in the layer picker")
    _replay_first_snapshot(page)
    # The map shown is then the first stored map of the layer shown, point for point. The
    # layer and the stored map are read afresh on each look, so that neither a layer that
    # changes after the replay nor a map stored again meanwhile makes the check stale; the
    # points are compared as sets of coordinates (row order is the view's own business).
    replayed: dict = {}

    def shows_the_first_stored_map() -> bool:
        layer = page.locator(".sc-embedding select").first.input_value()
        shown = re.search(r"step (\d+)", page.locator(".sc-map-step").first.inner_text())
        first = min(m["step"] for m in _maps(live_server.url, run.run_id) if m["layer"] == layer)
        replayed.update(layer=layer, shown=shown and int(shown.group(1)), first=first)
        if shown is None or int(shown.group(1)) != first:
            return False
        stored = httpx.get(f"{live_server.url}/api/runs/{run.run_id}/embedding",
                           params={"layer": layer, "step": first}, timeout=10).json()
        drawn = points(page)
        return (np.allclose(np.sort(drawn["x"]), np.sort(stored["x"]), atol=1e-4)
                and np.allclose(np.sort(drawn["y"]), np.sort(stored["y"]), atol=1e-4))

    try:
        wait_until(shows_the_first_stored_map, what="the first snapshot's points drawn")
    finally:
        logging.getLogger(__name__).info("replay: %s", replayed)
    run.detach()


def _fewest_maps_per_layer(url: str, run_id: str, layers: int) -> int:
    """The fewest stored maps of any projected layer; 0 until ``layers`` layers have maps."""
    counts: dict[str, int] = {}
    for entry in _maps(url, run_id):
        counts[entry["layer"]] = counts.get(entry["layer"], 0) + 1
    return min(counts.values()) if len(counts) >= layers else 0


def _replay_first_snapshot(page) -> None:
    """Drag the snapshot player to its first position (what a user does to replay)."""
    slider = page.locator(".sc-embedding input[type=range]").first
    slider.focus()
    slider.press("Home")


def test_a_second_run_appears_in_the_run_list(live_server, page, trainer):
    first = capture.attach(trainer.model, _probe(trainer, 100), url=live_server.url,
                           every=10, optimizer=trainer.optimizer, run_name="first-run")
    trainer.train(5)
    page.goto(live_server.url)
    options = page.locator(".sc-runs select option")
    wait_until(lambda: options.count() == 1, what="the first run in the run list")
    first.detach()
    from sentrycam.capture import demo
    other = demo.build_model("mlp", seed=1)
    second = capture.attach(other, _probe(trainer, 100), url=live_server.url,
                            run_name="second-run")
    wait_until(lambda: options.count() == 2, what="the second run in the run list")
    assert "second-run" in " ".join(options.all_inner_texts())
    second.detach()


def test_a_dashboard_opened_after_training_ends_replays_the_whole_run(server_process, page,
                                                                      trainer):
    server = server_process().start()
    run = capture.attach(trainer.model, _probe(trainer, 200), url=server.url, every=10,
                         optimizer=trainer.optimizer, criterion=trainer.criterion,
                         run_name="finished-run")
    trainer.train(40)
    run.detach()
    summary = httpx.get(f"{server.url}/api/runs/{run.run_id}").json()
    loss = httpx.get(f"{server.url}/api/runs/{run.run_id}/scalars",
                     params={"names": "loss"}).json()
    page.goto(f"{server.url}/?run={run.run_id}")
    wait_until(lambda: latest_step(page) == summary["last_step"], what="the run's last step")
    drawn = page.evaluate("""() => { for (const d of Bokeh.documents) {
        const s = d.get_model_by_name('sc-curve-loss'); if (s) return s.data.step.length; }
        return -1; }""")
    assert drawn == len(set(loss["step"]))
    maps = _maps(server.url, run.run_id)
    status = page.locator(".sc-status-text").first.inner_text()
    if maps:  # the server runs a projector worker: the newest map is drawn
        wait_until(lambda: points(page)["n"] == run.probe_size, MAP_TIMEOUT_S, "points")
    else:
        assert "no 2D map yet" in status
    assert "finished" in status


def test_a_server_with_tokens_serves_the_dashboard_to_viewers_and_never_shows_a_token(
        tmp_path, page, trainer, caplog):
    """The trainer writes with the write token, a viewer opens the page with the read token
    (?token=); no log line of the whole session, and not the page, holds either token."""
    caplog.set_level(logging.DEBUG)
    settings = ServerSettings(db_path=tmp_path / "guarded.duckdb", port=0, token=WRITE_TOKEN,
                              read_token=READ_TOKEN)
    with serve_in_thread(settings) as server:
        run = capture.attach(trainer.model, _probe(trainer, 100), url=server.url, every=10,
                             optimizer=trainer.optimizer, token=WRITE_TOKEN, run_name="guarded")
        trainer.train(12)
        assert httpx.get(server.url).status_code == 401
        page.goto(f"{server.url}/?token={READ_TOKEN}")
        wait_until(lambda: latest_step(page) is not None, what="the guarded run's steps")
        for part in PARTS:
            assert page.locator(f".{part}").count() >= 1, part
        first_seen = latest_step(page)
        trainer.train(30)
        wait_until(lambda: latest_step(page) > first_seen,
                   what=f"steps after {first_seen} pushed to the viewer")
        source = page.content()
        run.detach()
    assert WRITE_TOKEN not in source and READ_TOKEN not in source
    lines = [record.getMessage() for record in caplog.records]
    assert any("WebSocket" in line for line in lines), "the server logged no websocket"
    assert [line for line in lines if WRITE_TOKEN in line or READ_TOKEN in line] == []
