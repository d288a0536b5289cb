"""The embedding timeline under the player, fed by a real server: ticks of the shown layer's
maps, the shown step, the alerts of that layer (and run-wide ones), clicks that move the view."""

from __future__ import annotations

import numpy as np
import pytest

from sentrycam.backend.feed import Change
from sentrycam.frontend.state_views import SEVERITY_COLOUR
from sentrycam.protocol.changes import ChangeKind
from tests.frontend.dashboards import drain_until
from tests.live_server import LAYER, N_PROBE, RUN, coords, project, snapshot

OTHER = "conv"
ALERTS = ({"step": 3, "detector": "knn_consistency", "severity": 2, "layer": LAYER,
           "message": "kNN label consistency fell"},
          {"step": 2, "detector": "map_class_collapse", "severity": 3, "layer": OTHER,
           "message": "class 1 collapsing"},
          {"step": 1, "detector": "loss_divergence", "severity": 1, "layer": None,
           "message": "loss rising"})


def _map_of_other_layer(server, step: int) -> None:
    server.store.write_embedding(RUN, OTHER, step, np.arange(N_PROBE, dtype=np.int64),
                                 coords(step))
    server.app.state.feed.publish([Change(RUN, ChangeKind.EMBEDDING, step, OTHER)])


@pytest.fixture
def timeline(dashboard, server):
    """The ``dashboard`` fixture's run (maps of LAYER at steps 0 and 3), then a map of another
    layer and alerts of LAYER, of the other layer and of no layer, pushed live."""
    _map_of_other_layer(server, 2)
    for alert in ALERTS:
        server.store.upsert_alert(RUN, alert)
    server.app.state.feed.publish([Change(RUN, ChangeKind.ALERT)])
    return dashboard.embedding.timeline


def _column(source, name: str) -> list:
    return list(source.data[name])


def test_the_timeline_shows_the_shown_layer_its_maps_and_its_alerts(dashboard, timeline, server,
                                                                    ingest):
    drain_until(dashboard, lambda: dashboard.embedding.shown == (LAYER, 3)
                and len(timeline.alert_source.data["step"]) == 2)
    assert _column(timeline.tick_source, "step") == [0, 3]
    assert _column(timeline.shown_source, "step") == [3]
    # the other layer's alert is left out; the run-wide one (no layer) is kept
    assert _column(timeline.alert_source, "detector") == ["loss_divergence", "knn_consistency"]
    assert _column(timeline.alert_source, "step") == [1, 3]
    assert _column(timeline.alert_source, "colour") == [SEVERITY_COLOUR[1], SEVERITY_COLOUR[2]]

    dashboard.embedding.layer.value = OTHER  # the ticks and alerts follow the picked layer
    drain_until(dashboard, lambda: dashboard.embedding.shown == (OTHER, 2))
    assert _column(timeline.tick_source, "step") == [2]
    assert _column(timeline.shown_source, "step") == [2]
    assert _column(timeline.alert_source, "detector") == ["loss_divergence",
                                                          "map_class_collapse"]

    dashboard.embedding.layer.value = LAYER
    snapshot(ingest, 5)
    project(server, 5)  # a new map of the shown layer adds its tick
    drain_until(dashboard, lambda: _column(timeline.tick_source, "step") == [0, 3, 5])


def test_clicking_near_a_tick_moves_the_view_to_that_snapshot(dashboard, timeline):
    drain_until(dashboard, lambda: dashboard.embedding.shown == (LAYER, 3))
    timeline.pick_near(0.6)  # nearest tick: step 0
    drain_until(dashboard, lambda: dashboard.embedding.shown == (LAYER, 0))
    assert dashboard.embedding.live.value is False
    assert _column(timeline.shown_source, "step") == [0]
    timeline.pick_near(40.0)  # far from every tick: nothing happens
    dashboard.drain()
    assert dashboard.embedding.shown == (LAYER, 0)


def test_new_alerts_replace_the_markers_in_place(dashboard, timeline, server):
    source = timeline.alert_source
    drain_until(dashboard, lambda: len(source.data["step"]) == 2)
    server.store.upsert_alert(RUN, {"step": 3, "detector": "effective_rank", "severity": 3,
                                    "layer": LAYER, "message": "rank fell to 1.2"})
    server.app.state.feed.publish([Change(RUN, ChangeKind.ALERT)])
    # a second alert at step 3 joins that step's marker: counted, named, its severity wins
    drain_until(dashboard, lambda: _column(source, "count") == [1, 2])
    assert timeline.alert_source is source  # the same source, updated
    assert _column(source, "step") == [1, 3]
    assert _column(source, "detector")[1] == "effective_rank, knn_consistency"
    assert _column(source, "colour")[1] == SEVERITY_COLOUR[3]
