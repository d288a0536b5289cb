"""The status line says why maps are late when the local projector waits for free CPU."""

from __future__ import annotations

from sentrycam.frontend.state_views import StatusView


def test_the_status_line_says_maps_wait_while_training_uses_every_core():
    status = StatusView()
    status.update(snapshots=1, maps=0,
                  projector={"state": "ready", "queue_depth": 2, "waiting_for_cpu": True,
                             "deferred_s": 3.2, "max_deferral_s": 25.0})
    said = status.pane.object
    assert "1 snapshot, no 2D map yet (maps wait while training uses every core)" in said
    assert ("projector: ready, 2 snapshot(s) queued, maps wait while training uses every core "
            "(at most 25 s each)") in said
    status.update(projector={"state": "busy", "queue_depth": 1, "waiting_for_cpu": False,
                             "deferred_s": 0.0, "max_deferral_s": 25.0})
    assert "every core" not in status.pane.object
    assert "no 2D map yet (projector warming up or absent)" in status.pane.object
