"""The dashboard's Python side against a real server: pushed frames end up in the plots'
data sources (the browser tests check what the page then draws)."""

from __future__ import annotations

import numpy as np

from sentrycam.backend.feed import Change
from sentrycam.frontend.client import ApiClient
from sentrycam.frontend.run_view import RunDashboard
from sentrycam.protocol.changes import ChangeKind
from tests.frontend.dashboards import drain_until
from tests.live_server import (LAYER, N_PROBE, RUN, WRONG_PREDICTIONS, coords, project,
                               quality, snapshot, start_run, train_step)


def test_catch_up_fills_every_view(dashboard):
    points = dashboard.embedding.source
    drain_until(dashboard, lambda: len(points.data["x"]) == N_PROBE)
    assert dashboard.embedding.shown == (LAYER, 3)
    assert dashboard.curves.sources["loss"].data["step"] == [0, 1, 2, 3]
    heat = dashboard.heatmaps.sources["grad_norm"].data
    assert sorted(set(heat["layer"])) == ["conv", "fc"] and len(heat["step"]) == 8
    drain_until(dashboard, lambda: len(dashboard.health.source.data["step"]) == 2)
    cells = dashboard.health.class_source.data
    assert len(cells["step"]) == 2 * 4 and sorted(set(cells["cls"])) == ["0", "1", "2", "3"]
    assert max(cells["spread"]) < 2  # each class sits in a tight blob of the test maps
    shown_quality = dashboard.embedding.quality_text.object
    assert all(name in shown_quality for name in quality(3))  # the worker's metric names
    assert "latest step <span class='sc-latest-step'>3</span>" in dashboard.status.pane.object
    assert "2 of 2 snapshots mapped" in dashboard.status.pane.object
    assert dashboard.alerts.empty.visible and not dashboard.alerts.table.visible


def test_live_rows_stream_and_slider_replays_an_earlier_snapshot(dashboard, server, ingest):
    points = dashboard.embedding.source
    drain_until(dashboard, lambda: len(points.data["x"]) == N_PROBE)
    train_step(ingest, 4)
    drain_until(dashboard, lambda: dashboard.curves.sources["loss"].data["step"][-1:] == [4])
    assert dashboard.curves.sources["loss"].data["step"] == [0, 1, 2, 3, 4]  # no repeats
    snapshot(ingest, 5)
    project(server, 5)
    drain_until(dashboard, lambda: dashboard.embedding.shown == (LAYER, 5))
    dashboard.embedding.player.value = 0  # replay: the oldest map is fetched over REST
    assert dashboard.embedding.live.value is False
    drain_until(dashboard, lambda: dashboard.embedding.shown == (LAYER, 0))
    assert np.allclose(points.data["y"], coords(0)[:, 1])
    dashboard.heatmaps._picked(dashboard.heatmaps.sources["grad_norm"], [
        dashboard.heatmaps.sources["grad_norm"].data["step"].index(3)])
    drain_until(dashboard, lambda: dashboard.embedding.shown == (LAYER, 3))
    dashboard.health._picked([dashboard.health.class_source.data["step"].index(0)])
    drain_until(dashboard, lambda: dashboard.embedding.shown == (LAYER, 0))


def test_selection_draws_trails_and_alerts_replace_the_empty_state(dashboard, server):
    points = dashboard.embedding.source
    drain_until(dashboard, lambda: len(points.data["x"]) == N_PROBE)
    dashboard.embedding._on_select([0, 1])
    drain_until(dashboard, lambda: len(dashboard.embedding.trail_source.data["xs"]) == 2)
    assert all(len(xs) == 2 for xs in dashboard.embedding.trail_source.data["xs"])
    server.store.upsert_alert(RUN, {"step": 3, "detector": "grad_explosion", "severity": 3,
                                    "message": "gradient norm x40"})
    server.app.state.feed.publish([Change(RUN, ChangeKind.ALERT)])
    drain_until(dashboard, lambda: dashboard.alerts.table.visible)
    assert not dashboard.alerts.empty.visible
    assert dashboard.curves.alert_source.data["step"] == [3]
    dashboard.embedding.colour.value = "correctness"
    colours = np.asarray(points.data["c"])
    assert np.nansum(colours == 0) == WRONG_PREDICTIONS


def test_the_classifier_input_is_shown_first_until_the_user_picks_a_layer(server, ingest):
    start_run(ingest, steps=1)
    for layer in ("conv", "fc:input"):
        server.store.write_embedding(RUN, layer, 0, np.arange(N_PROBE, dtype=np.int64),
                                     coords(0))
        server.app.state.feed.publish([Change(RUN, ChangeKind.EMBEDDING, 0, layer)])
    client = ApiClient(server.url)
    dashboard = RunDashboard(client, RUN)
    try:
        drain_until(dashboard, lambda: dashboard.embedding.shown == ("fc:input", 0))
        dashboard.embedding.layer.value = "conv"  # the user's choice sticks
        server.store.write_embedding(RUN, "fc:input", 1, np.arange(N_PROBE, dtype=np.int64),
                                     coords(1))
        server.app.state.feed.publish([Change(RUN, ChangeKind.EMBEDDING, 1, "fc:input")])
        drain_until(dashboard, lambda: dashboard.embedding.steps.get("fc:input") == [0, 1])
        assert dashboard.embedding.layer.value == "conv"
    finally:
        dashboard.close()
        client.close()


def test_maps_draw_with_webgl_unless_a_canvas_is_asked_for(server, ingest):
    start_run(ingest, steps=1)
    client = ApiClient(server.url)
    views = [RunDashboard(client, RUN), RunDashboard(client, RUN, webgl=False)]
    try:
        assert [v.embedding.figure.output_backend for v in views] == ["webgl", "canvas"]
    finally:
        for view in views:
            view.close()
        client.close()


def test_before_the_first_map_the_picker_caption_and_status_line_agree(server, ingest):
    start_run(ingest, steps=2)
    snapshot(ingest, 0)  # stored, not mapped yet
    client = ApiClient(server.url)
    view = RunDashboard(client, RUN)
    try:
        embedding = view.embedding
        assert embedding.layer.options == ["waiting for the first map"]
        drain_until(view, lambda: view.status.values["snapshots"] == 1)
        assert "1 snapshot stored, waiting for the first map" in embedding.caption.object
        assert "1 snapshot, no 2D map yet" in view.status.pane.object  # singular, as above
        assert not embedding.figure.visible  # an empty map is not drawn (no range warnings)
        project(server, 0)
        drain_until(view, lambda: embedding.shown == (LAYER, 0))
        assert embedding.layer.options == [LAYER] and embedding.figure.visible
        assert f"1 layer mapped: {LAYER}." in embedding.layer_note.object
        assert "1 of 1 snapshot mapped" in view.status.pane.object
    finally:
        view.close()
        client.close()
