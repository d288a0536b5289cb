"""Calibration to an architecture's own normal: healthy runs of the scenario harness
(benchmarks/scenarios.py: real capture -> server -> audit engine) whose normal behaviour used
to read as a failure (a recurrent net's gradient spikes, a warm-up followed by cosine decay)
raise no alert of severity >= 2. The runs are from the tuning split (scenario_plan.TUNING):
the test split stays unseen."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

from scenario_plan import TUNING, Scenario  # noqa: E402  (benchmarks/: see conftest.py)
from scenarios import settle, train_run  # noqa: E402

STEPS = 300


@pytest.mark.parametrize("scenario", [Scenario("healthy", "gru", 10),
                                      Scenario("healthy", "mlp", 12, "warmup_cosine")],
                         ids=lambda s: s.name)
def test_a_healthy_run_raises_no_confirmed_alert(scenario_server, scenario):
    server = scenario_server
    assert scenario in TUNING  # calibrated on the tuning split only
    run_id = train_run(server.url, scenario.arch, scenario.kind, scenario.seed, STEPS,
                       STEPS // 2, scenario.schedule, scenario.optimizer)["run_id"]
    settle(server)
    status = server.app.state.audit.run_status(run_id)
    # The detectors this calibration concerns did judge the run (a silent engine is no pass).
    assert {"gradient_explosion", "gradient_flow", "optimizer_state"} <= set(status["active"])
    assert status["last_step"] >= STEPS - 1 and not status["errors"]
    alerts = server.store.alerts(run_id)
    confirmed = [(a["detector"], a["layer"], a["step"], a["severity"]) for a in alerts
                 if a["severity"] >= 2]
    assert not confirmed, confirmed
