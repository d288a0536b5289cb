"""The status line says what its capture overhead number measures: under a fixed schedule
(``sentrycam demo``) it is the price of that schedule, not of attach's budgeted default."""

from __future__ import annotations

import time

import pytest

from sentrycam.frontend.client import ApiClient
from sentrycam.protocol.messages import RunStart, Status
from tests.frontend.dashboards import drain_until

FIXED = "f1" * 16
BUDGETED = "b2" * 16


@pytest.mark.parametrize("run_id, budget, said", [
    (FIXED, None, "capture took 23.00% of step time (fixed schedule, no overhead budget)"),
    (BUDGETED, 0.01, "capture took 0.80% of step time (budget 1.00%)")])
def test_the_overhead_is_shown_against_the_runs_schedule(server, ingest, run_id, budget, said):
    from sentrycam.frontend.run_view import RunDashboard

    ingest.send(RunStart(run_id, "overhead", time.time(), {"overhead_budget": budget}),
                Status(run_id=run_id, step=5, dropped=0, spooled=0,
                       overhead=0.23 if budget is None else 0.008, snapshot_every=25,
                       queue_depth=0))
    client = ApiClient(server.url)
    view = RunDashboard(client, run_id)
    try:
        drain_until(view, lambda: said in view.status.pane.object)
        assert "capture overhead" not in view.status.pane.object
    finally:
        view.close()
        client.close()
