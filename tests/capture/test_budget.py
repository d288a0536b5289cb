"""The overhead controller stretches expensive activities to fit the budget."""

import logging
import math
import time

import pytest
import torch
from torch import nn

from sentrycam import capture
from sentrycam.capture.budget import (OverheadController, Schedule, allocate, floor_gap,
                                      next_due)
from sentrycam.capture.transport import MemoryTransport

EVERY = {"snapshot": 10, "telemetry": 1, "activations": 10}


def synthetic_run(controller, steps, step_seconds, costs, warmup=1.0):
    """Drive ``controller`` with a made-up clock: each step trains ``step_seconds``; at the first
    step every activity in ``costs`` fires twice: a warm-up firing of ``warmup`` s, then one of
    its steady cost (seconds per firing)."""
    now = 0.0
    controller.step_boundary(now)
    for activity, seconds in costs.items():
        for spent in (warmup, seconds):
            controller.charge(activity, spent)
            now += spent
    for _ in range(steps):
        now += step_seconds
        controller.step_boundary(now)
    return controller


def test_allocate_gives_cheap_activities_their_need_and_splits_the_rest():
    granted = allocate({"snapshot": 1.0, "telemetry": 0.01, "activations": 0.5},
                       {"snapshot": 0.6, "telemetry": 0.2, "activations": 0.2}, 1.0)
    assert granted["telemetry"] == pytest.approx(0.01)
    assert granted["snapshot"] == pytest.approx(0.99 * 0.75)
    assert granted["activations"] == pytest.approx(0.99 * 0.25)
    assert sum(granted.values()) == pytest.approx(1.0)


def test_expensive_snapshots_are_stretched_to_fit_the_budget():
    # long enough for 1% of the training time to pay back the warm-up (1.05 s in 210 s)
    controller = synthetic_run(OverheadController(0.01, EVERY), steps=21_000, step_seconds=0.01,
                               costs={"snapshot": 0.05})
    assert controller.debt == 0
    # 1% of a 10 ms step is 100 us per step; a 50 ms snapshot fits once every 500 steps
    assert controller.gap("snapshot") == pytest.approx(500, rel=1e-6)
    schedule = Schedule(controller, EVERY)
    schedule.fired("snapshot", 4000)  # far enough into the run for the floor to allow it
    assert schedule.interval("snapshot") in (500, 510)
    assert schedule.stretched("snapshot")
    # the measured overhead counts the warm-up
    assert controller.overhead == pytest.approx(1.05 / (1.05 + 210))


def simulated_run(steps: int, minimum_cadence: bool, warmup: float = 0.5,
                  cost: float = 0.02) -> tuple[OverheadController, list[int]]:
    """``steps`` training steps of 10 ms at a 1% budget; each snapshot due fires and costs
    ``cost`` s (the first ``warmup`` s). Returns the controller and the snapshot steps."""
    controller = OverheadController(0.01, EVERY)
    schedule = Schedule(controller, EVERY, minimum_cadence)
    now, fired = 0.0, []
    for step in range(steps):  # in the order of Run's post-hook: the boundary, then firings
        now += 0.01
        if controller.step_boundary(now):
            schedule.refresh()
        if schedule.due("snapshot", step):
            seconds = warmup if not fired else cost
            schedule.fired("snapshot", step)
            controller.charge("snapshot", seconds)
            now += seconds
            fired.append(step)
    return controller, fired


def test_the_budget_holds_on_the_total_and_pays_back_a_warm_up():
    controller, fired = simulated_run(100_000, minimum_cadence=False)
    # the 0.5 s warm-up put the run far over budget at once: after the second snapshot (the
    # first whose cost is known) the next waited while most of it was paid back (0.5 s at
    # 100 us a step is 5,000 steps), then they came closer ...
    assert fired[:2] == [0, 10] and fired[2] > 2_000
    gaps = [b - a for a, b in zip(fired[2:], fired[3:])]
    assert gaps[:10] == sorted(gaps[:10], reverse=True)
    # ... to the budget's rate: 20 ms at 100 us a step; the run's mean is within the budget
    assert controller.debt == 0 and controller.overhead <= 0.01
    assert controller.gap("snapshot") == pytest.approx(200, rel=0.01)
    assert set(gaps[-5:]) <= {200, 210}


def test_the_minimum_cadence_fires_through_a_debt_and_the_mean_returns_later():
    controller, fired = simulated_run(100_000, minimum_cadence=True)
    # the floor fires the early snapshots whatever the debt ...
    assert fired[:6] == [0, 10, 20, 30, 40, 50]
    # ... and once past it, the run's mean comes back to the budget
    assert controller.overhead <= 0.0101
    assert len(fired) < len(simulated_run(100_000, minimum_cadence=False)[1]) + 60


def test_the_warm_up_firing_does_not_set_the_cost():
    controller = OverheadController(0.01, EVERY)
    controller.charge("snapshot", 5.0)  # first firing: kernel selection, allocations...
    assert "snapshot" not in controller.cost and controller.gap("snapshot") == 0
    controller.charge("snapshot", 0.05)
    assert controller.cost["snapshot"] == 0.05


def test_cheap_activities_keep_their_minimum_interval():
    # long enough to pay back the warm-ups (2 s in 300 s of training at 1%)
    controller = synthetic_run(OverheadController(0.01, EVERY), steps=30_000, step_seconds=0.01,
                               costs={"snapshot": 0.001, "telemetry": 1e-6})
    schedule = Schedule(controller, EVERY)
    schedule.fired("snapshot", 1000)
    assert schedule.interval("telemetry") == 1
    # 1 ms snapshots need 100 us/step at every=10: just over what telemetry leaves of the
    # 100 us budget, so the interval goes to the next multiple of every
    assert schedule.interval("snapshot") == 20


def over_budget_schedule(steps: int) -> tuple[OverheadController, Schedule, dict[str, list]]:
    """Snapshots (every=50) and telemetry whose costs the budget would space thousands of steps
    apart, scheduled over ``steps`` steps: the controller, the schedule and the firings."""
    controller = synthetic_run(OverheadController(0.01, {**EVERY, "snapshot": 50}), steps=20,
                               step_seconds=0.001, costs={"snapshot": 1.0, "telemetry": 0.01})
    schedule = Schedule(controller, {**EVERY, "snapshot": 50})
    fired: dict[str, list] = {"snapshot": [], "telemetry": []}
    for step in range(steps):
        for activity, steps_fired in fired.items():
            if schedule.due(activity, step):
                schedule.fired(activity, step)
                steps_fired.append(step)
    return controller, schedule, fired


def test_the_minimum_cadence_caps_what_the_budget_stretches():
    controller, schedule, fired = over_budget_schedule(300)
    assert controller.gap("snapshot") > 10_000 and controller.gap("telemetry") > 100
    # a snapshot at least once per quarter of the steps taken, rounded up to every=50
    assert fired["snapshot"] == [0, 50, 100, 150, 200, 250]
    assert fired["telemetry"] == list(range(0, 300, 2))
    assert schedule.stretched("snapshot") and schedule.interval("snapshot") == 100
    assert schedule.stretched("telemetry")


def test_the_minimum_cadence_thins_out_in_a_long_run():
    controller, _, fired = over_budget_schedule(30_000)
    telemetry = fired["telemetry"]
    # issue 16's short-run figures hold: every second step up to step 300
    assert telemetry[:151] == list(range(0, 301, 2))
    # then the floor fades: a 100 times longer run gets fewer than twice the firings (this
    # controller never sees its warm-up's debt paid back, so the floor spaces them to the end)
    assert telemetry[151:155] == [302, 305, 308, 311]
    assert len(telemetry) < 2 * 151
    assert controller.debt > 0
    assert telemetry[-1] - telemetry[-2] == math.ceil(floor_gap("telemetry", telemetry[-2]))
    assert 25 <= len(fired["snapshot"]) <= 35  # 6 by step 250, then a quarter further each


def test_without_a_budget_the_schedule_is_fixed():
    controller = synthetic_run(OverheadController(None, EVERY), steps=20, step_seconds=0.01,
                               costs={"snapshot": 10.0})
    assert controller.gap("snapshot") == 0
    assert Schedule(controller, EVERY).interval("snapshot") == 10


def test_schedule_fires_on_multiples_of_every():
    assert next_due(0, 10, 0) == 10
    assert next_due(30, 10, 25.5) == 60
    assert next_due(7, 1, 2.2) == 10
    controller = OverheadController(None, EVERY)
    schedule = Schedule(controller, EVERY)
    assert schedule.due("snapshot", 0)  # the first chance always fires
    schedule.fired("snapshot", 0)
    assert [s for s in range(35) if schedule.due("snapshot", s)] == list(range(10, 35))
    schedule.fired("snapshot", 10)
    assert not schedule.due("snapshot", 19) and schedule.due("snapshot", 20)


class SlowInEval(nn.Module):
    """Identity that sleeps in eval mode: the probe forward is deliberately expensive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            time.sleep(0.05)
        return x


@pytest.mark.parametrize("budget", [0.01, None])
def test_a_slow_probe_forward_stretches_the_snapshot_interval(data, train, budget, caplog):
    caplog.set_level(logging.INFO, logger="sentrycam")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), SlowInEval(), nn.Linear(32, 4))
    x, y = data("mlp", n=64)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), every=2, overhead_budget=budget,
                         transport=transport)
    train(model, x, y, 12 if budget is None else 60)
    run.detach()
    snapshots = [s.step for s in transport.of_kind("snapshot")]
    status = transport.of_kind("status")[-1]
    events = {e.event: e.message for e in transport.of_kind("event")}
    if budget is None:
        assert snapshots == [0, 2, 4, 6, 8, 10]
        assert status.snapshot_every == 2
        assert not events
    else:
        # 50 ms per snapshot cannot fit 1% of sub-millisecond steps: the budget would stretch
        # the interval without end, the minimum cadence keeps it within a quarter of the steps
        # taken (rounded up to the user's every)
        assert snapshots == [0, 2, 4, 6, 8, 10, 14, 18, 24, 30, 38, 48]
        assert status.snapshot_every == 12  # the next one at 60
        # the user reads why, and how to change it
        assert "snapshot every" in events["budget_stretched"]
        assert "overhead_budget" in events["budget_stretched"]
        assert "over the 1% budget" in events["over_budget"]
        told = [r.getMessage() for r in caplog.records]  # without logging set up: stderr
        assert [text for text in told if "overhead budget spaces capture out" in text]
    assert status.overhead > 0
