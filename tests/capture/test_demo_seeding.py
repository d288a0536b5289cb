"""The demo's training is reproducible: a seed decides everything, dropout included."""

from __future__ import annotations

import torch

from sentrycam.capture import demo


def test_two_demo_runs_with_one_seed_train_identically_and_leave_the_callers_generator():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = demo.train(40, seed=3)
    torch.rand(7)  # the caller draws in between: the next run must not see it
    second = demo.train(40, seed=3)
    assert first == second  # exact: dropout masks drawn from the run's own seed
    assert demo.train(40, seed=4) != first
    torch.set_rng_state(before)
    third = demo.train(40, seed=3)
    assert third == first
    torch.set_rng_state(before)
    demo.train(40, seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is untouched
