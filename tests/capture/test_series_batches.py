"""Quiet steps leave the trainer as one ScalarSeries per batch: a run of plain steps sends a
frame per batch of BATCH_STEPS steps, not one per step, and the server stores every step's loss
and learning rate exactly; a NaN loss in a held step is still flagged once, at its own step."""

from __future__ import annotations

import json
import math
import urllib.request

import torch
from torch import nn

from sentrycam import capture
from sentrycam.capture.steps import BATCH_STEPS
from sentrycam.capture.transport import MemoryTransport
from sentrycam.protocol.messages import ScalarSeries

#: Long enough for telemetry's minimum cadence to leave long quiet stretches (it fires every 2
#: steps up to step 300, then ever further apart).
STEPS = 1500
#: So small that every activity runs at its minimum cadence.
TINY_BUDGET = 1e-6


class _NanAt(nn.CrossEntropyLoss):
    """Cross-entropy whose value is NaN at step ``nan_at`` while its gradients stay finite
    (a detached NaN added), so that only that step's loss is NaN."""

    def __init__(self, nan_at: int | None) -> None:
        super().__init__()
        self.nan_at, self.step = nan_at, 0

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = super().forward(output, target)
        if self.step == self.nan_at:
            loss = loss + (torch.tensor(math.nan) - loss.detach())
        return loss


def _train(steps: int, *, nan_at: int | None = None, **attach_kwargs):
    """A seeded MLP whose learning rate changes every step; returns (run, {step: (loss, lr)})
    as the training loop saw them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + 0.01 * step))
    criterion = _NanAt(nan_at)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    run = capture.attach(model, optimizer=optimizer, criterion=criterion,
                         overhead_budget=TINY_BUDGET, **attach_kwargs)
    seen = {}
    for step in range(steps):
        optimizer.zero_grad()
        criterion.step = step
        loss = criterion(model(x), y)
        loss.backward()
        seen[step] = (loss.item(), optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    run.detach()
    return run, seen


def test_plain_steps_reach_the_server_a_batch_per_frame_and_every_value_exactly(server):
    run, seen = _train(STEPS, url=server.url)
    server.wait_written()
    stored = server.store.scalars(run.run_id, names=["loss", "lr"])
    got = {}
    for step, name, value in zip(stored["step"], stored["name"], stored["value"]):
        got.setdefault(step, {})[name] = value
    assert {step: (v["loss"], v["lr"]) for step, v in got.items()} == seen
    with urllib.request.urlopen(f"{server.url}/health", timeout=10) as response:
        frames = json.loads(response.read())["ingest"]["committed"]  # this run's, all of them
    # One frame per step before, two at telemetry steps; now a batch of quiet steps is one.
    assert frames < STEPS * 0.7, f"{frames} frames for {STEPS} steps"


def test_held_steps_leave_as_one_series_per_batch():
    transport = MemoryTransport()
    _train(STEPS, transport=transport)
    series = [m for m in transport.messages if isinstance(m, ScalarSeries)]
    held = sum(len(m.steps) for m in series)
    full = STEPS - held  # steps with telemetry or statistics: each ends a quiet stretch
    assert held > STEPS // 2
    assert len(series) <= full + 1 + math.ceil(held / BATCH_STEPS)
    late = [m for m in series if m.steps[0] >= 1000]  # telemetry every 22+ steps by then
    assert sum(len(m.steps) for m in late) / len(late) > 10
    assert all(m.names == ("lr", "loss") and len(m.steps) >= 2 for m in series)  # a lone
    # quiet step (between two telemetry steps) travels as its own Scalars, cheaper to frame
    assert [m.step for m in transport.of_kind("scalars")] == list(range(STEPS))


def test_a_nan_loss_in_a_held_step_is_flagged_once_at_its_step(caplog):
    transport, nan_at = MemoryTransport(), 1051
    with caplog.at_level("WARNING", logger="sentrycam.capture.run"):
        _train(1100, nan_at=nan_at, transport=transport)
    held = next(m for m in transport.messages
                if isinstance(m, ScalarSeries) and nan_at in m.steps.tolist())
    assert held.steps[0] < nan_at  # held with steps before it: flagged at its own step
    flagged = [m for m in transport.of_kind("event")
               if m.event == "nonfinite" and m.payload["layer"] == "loss"]
    assert [(m.step, m.payload["count"]) for m in flagged] == [(nan_at, 1)]
    assert f"the training loss is NaN/Inf at step {nan_at}" in caplog.text
