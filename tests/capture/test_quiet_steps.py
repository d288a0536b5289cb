"""Quiet steps: with activities rare, most steps only hold their loss and learning rate for the
next batch of Scalars. Every step must still arrive once, in order, with its own values."""

import math
import time

import pytest
import torch
from torch import nn

from sentrycam import capture
from sentrycam.capture.param_telemetry import LAYER_STATS
from sentrycam.capture.transport import MemoryTransport

STEPS = 150
#: So small that every activity becomes rare once its cost is measured: most steps are quiet.
TINY_BUDGET = 1e-6


def per_step_scalars(transport):
    return [m for m in transport.of_kind("scalars") if "lr" in m.values]


def optimizer_for(model, groups):
    params = list(model.parameters())
    if groups == 1:
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return torch.optim.SGD([{"params": params[:2], "lr": 0.01}, {"params": params[2:]}],
                           lr=0.05, momentum=0.9)


@pytest.mark.parametrize("reduction, groups", [("mean", 1), ("none", 2)])
def test_every_held_step_reports_its_own_loss_and_learning_rates(make_model, data, reduction,
                                                                 groups):
    model = make_model("mlp")
    x, y = data("mlp")
    criterion = nn.CrossEntropyLoss(reduction=reduction)
    optimizer = optimizer_for(model, groups)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.98)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), criterion=criterion, every=5,
                         overhead_budget=TINY_BUDGET, transport=transport)
    gen = torch.Generator().manual_seed(0)
    expected, started = [], time.time()
    for _ in range(STEPS):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        optimizer.zero_grad()
        loss = criterion(model(x[idx]), y[idx])
        loss.mean().backward()
        optimizer.step()
        expected.append((loss.detach().float().mean().item(),
                         [group["lr"] for group in optimizer.param_groups]))
        scheduler.step()  # after the step: the step's message carries the rate it used
    run.detach()
    finished = time.time()

    scalars = per_step_scalars(transport)
    assert [m.step for m in scalars] == list(range(STEPS))
    for message, (loss, rates) in zip(scalars, expected):
        assert message.values["loss"] == pytest.approx(loss, rel=1e-6)
        assert message.values["lr"] == rates[0]
        if groups == 2:
            assert message.values["lr_group1"] == rates[1]
        assert started - 1.0 <= message.wall_time <= finished + 1.0
    assert all(a.wall_time <= b.wall_time for a, b in zip(scalars, scalars[1:]))

    # a tiny budget leaves telemetry at the minimum cadence, every second step after the first
    # few: the other steps were plain ones; and the telemetry steps are whole: both hooks ran
    telemetry = {m.step for m in transport.of_kind("layer_stats") if m.stats == LAYER_STATS}
    assert len(telemetry) <= STEPS // 2 + 2
    assert telemetry == {m.step for m in scalars if "grad_norm" in m.values}


def test_a_nan_loss_in_a_held_step_is_flagged_once(make_model, data):
    model = make_model("nan")
    x, y = data("nan")
    criterion = nn.CrossEntropyLoss()
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), criterion=criterion,
                         overhead_budget=TINY_BUDGET, transport=transport)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(STEPS):
        model.spike.on = step >= STEPS - 20
        optimizer.zero_grad()
        criterion(model(x[:16]), y[:16]).backward()
        optimizer.step()
    run.detach()
    losses = [m.values["loss"] for m in per_step_scalars(transport)]
    assert len(losses) == STEPS
    assert all(math.isfinite(v) for v in losses[:STEPS - 20])
    assert all(math.isnan(v) for v in losses[STEPS - 20:])
    flagged = [e for e in transport.of_kind("event")
               if e.event == "nonfinite" and e.payload["layer"] == "loss"]
    assert [e.step for e in flagged] == [STEPS - 20]
    assert not [e for e in transport.of_kind("event") if e.event == "capture_disabled"]
