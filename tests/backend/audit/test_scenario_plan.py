"""The scenario benchmark's plan (benchmarks/scenario_plan.py) and its failure injections
(benchmarks/scenario_failures.py): the splits are disjoint and cover what they claim, and
every failure kind changes training from its step on, never before."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scenario_failures import Injection  # noqa: E402  (benchmarks/: see conftest.py)
from scenario_models import build  # noqa: E402
from scenario_plan import (ARCHITECTURES, FAMILY, HEALTHY, KINDS, OPTIMIZERS,  # noqa: E402
                           SCHEDULES, TEST, TUNED_KINDS, TUNING, TUNING_ONLY, check_disjoint)
from scenarios import make_optimizer  # noqa: E402

from sentrycam.backend.audit.diagnosis import DIAGNOSES


def test_the_splits_are_disjoint_and_the_test_split_covers_every_setting():
    check_disjoint()
    assert not {s.name for s in TUNING} & {s.name for s in TEST}
    assert {s.kind for s in TUNING} == set(TUNED_KINDS) | set(TUNING_ONLY) | {HEALTHY}
    assert all(s.arch in TUNING_ONLY[s.kind][0] for s in TUNING if s.kind in TUNING_ONLY)
    assert len(KINDS) >= 2 * len(TUNED_KINDS)
    assert {s.kind for s in TEST} == set(KINDS) | {HEALTHY}
    assert {s.arch for s in TEST} == set(ARCHITECTURES)
    healthy = [s for s in TEST if s.kind == HEALTHY]
    assert {(s.schedule, s.optimizer) for s in healthy} == {
        (schedule, optimizer) for schedule in SCHEDULES for optimizer in OPTIMIZERS}
    assert set(FAMILY.values()) - {HEALTHY} <= set(DIAGNOSES)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_schedules_stay_positive_and_at_most_the_base_rate(schedule):
    factors = [SCHEDULES[schedule](step / 360) for step in range(360)]
    assert all(0 < f <= 1.0 for f in factors)


def _train(kind: str, steps: int, at: int) -> list[torch.Tensor]:
    """A few steps of the harness's loop on the MLP (no capture); the parameters after them."""
    task, model = build("mlp", 0)
    optimizer = make_optimizer("adam", model, 1e-3)
    injection = Injection(kind, at, model, optimizer, task, 0)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        injection.at_start(step)
        pool = torch.arange(32 if injection.train_subset(step) else len(task.y_train))
        idx = pool[torch.randint(0, len(pool), (32,), generator=generator)]
        xb, yb = injection.batch(step, task.x_train[idx], task.y_train[idx])
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        injection.before_step(step)
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * injection.lr_factor(step)
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_changes_training_from_its_step_on(kind):
    untouched = zip(_train(kind, 3, 3), _train(HEALTHY, 3, 3))
    assert all(torch.equal(a, b) for a, b in untouched), f"{kind} acted before its step"
    changed = zip(_train(kind, 6, 3), _train(HEALTHY, 6, 3))
    assert not all(torch.allclose(a, b) for a, b in changed), f"{kind} changed nothing"
