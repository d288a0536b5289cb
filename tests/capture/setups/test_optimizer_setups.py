"""Plain loops with gradient accumulation, several parameter groups and an LR scheduler stream
to a real server: steps are optimizer steps and each group's learning rate has its curve."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sentrycam.capture import attach
from tests.capture.setups.tiny_training import batches, make_data, make_model

pytestmark = pytest.mark.slow  # a server, its 2D maps


def test_gradient_accumulation_counts_optimizer_steps(live):
    model, criterion = make_model(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = attach(model, make_data(), criterion=criterion, optimizer=optimizer, url=live.url,
                 every=3, overhead_budget=None, run_name="accumulate")
    data = batches(*make_data())
    for _ in range(10):  # 10 optimizer steps of 4 micro-batches each
        for _ in range(4):
            x, y = next(data)
            (criterion(model(x), y) / 4).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert run.step == 10
    run.detach()
    stored = live.stored("accumulate")
    assert stored.summary["last_step"] == 9
    assert sorted(stored.scalars["loss"]) == list(range(10))
    assert sorted(stored.scalars["grad_norm"]) == list(range(10))
    assert stored.snapshot_steps[:4] == [0, 3, 6, 9]
    assert {m["step"] for m in stored.maps} == set(stored.snapshot_steps)


def test_each_parameter_group_has_its_learning_rate_curve_as_the_scheduler_moves_it(live):
    model, criterion = make_model(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD([
        {"params": model[0].parameters()},
        {"params": model[2].parameters(), "lr": 0.01},
        {"params": model[4].parameters(), "lr": 0.001}], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    run = attach(model, make_data(), criterion=criterion, optimizer=optimizer, url=live.url,
                 every=4, overhead_budget=None, run_name="groups")
    data = batches(*make_data())
    for _ in range(12):
        x, y = next(data)
        criterion(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    run.detach()
    stored = live.stored("groups")
    # The rate each step used: halved every 4 steps, each group from its own start.
    for name, start in (("lr", 0.1), ("lr_group1", 0.01), ("lr_group2", 0.001)):
        assert sorted(stored.scalars[name]) == list(range(12)), name
        expected = [start * 0.5 ** (step // 4) for step in range(12)]
        assert [stored.scalars[name][s] for s in range(12)] == pytest.approx(expected), name
    assert stored.snapshot_steps[:3] == [0, 4, 8]
