"""Plain loops with gradient accumulation, several parameter groups and an LR scheduler stream
to a real server: steps are optimizer steps and each group's learning rate has its curve."""

from __future__ import annotations

import pytest
import torch

from tests.capture.setups.tiny_training import Setup

pytestmark = pytest.mark.slow  # a server, its 2D maps


def test_gradient_accumulation_counts_optimizer_steps(live):
    setup = Setup()
    run = setup.attach(url=live.url, every=3, run_name="accumulate")
    for _ in range(10):  # 10 optimizer steps of 4 micro-batches each
        for _ in range(4):
            x, y = next(setup.data)
            (setup.criterion(setup.model(x), y) / 4).backward()
        setup.optimizer.step()
        setup.optimizer.zero_grad()
    assert run.step == 10
    run.detach()
    stored = live.stored("accumulate")
    assert stored.summary["last_step"] == 9
    assert sorted(stored.scalars["loss"]) == list(range(10))
    assert sorted(stored.scalars["grad_norm"]) == list(range(10))
    assert stored.snapshot_steps[:4] == [0, 3, 6, 9]
    assert {m["step"] for m in stored.maps} == set(stored.snapshot_steps)


def test_each_parameter_group_has_its_learning_rate_curve_as_the_scheduler_moves_it(live):
    setup = Setup(lambda model: torch.optim.SGD([
        {"params": model[0].parameters()},
        {"params": model[2].parameters(), "lr": 0.01},
        {"params": model[4].parameters(), "lr": 0.001}], lr=0.1))
    scheduler = torch.optim.lr_scheduler.StepLR(setup.optimizer, step_size=4, gamma=0.5)
    run = setup.attach(url=live.url, every=4, run_name="groups")
    for _ in range(12):
        setup.step()
        scheduler.step()
    run.detach()
    stored = live.stored("groups")
    # The rate each step used: halved every 4 steps, each group from its own start.
    for name, start in (("lr", 0.1), ("lr_group1", 0.01), ("lr_group2", 0.001)):
        assert sorted(stored.scalars[name]) == list(range(12)), name
        expected = [start * 0.5 ** (step // 4) for step in range(12)]
        assert [stored.scalars[name][s] for s in range(12)] == pytest.approx(expected), name
    assert stored.snapshot_steps[:3] == [0, 4, 8]
