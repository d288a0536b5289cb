"""Gradient clipping: the gradient-norm curve shows the norm before clipping (what
``clip_grad_norm_`` returned), and ``grad_norm_clipped`` the norm the optimizer used."""

from __future__ import annotations

import pytest
import torch

from tests.capture.setups.tiny_training import Setup

MAX_NORM = 0.01  # far below this model's gradient norms (about 0.3)


@pytest.mark.slow
def test_the_curves_show_the_norm_before_clipping_and_the_clipped_norm(live):
    torchs_own = torch.nn.utils.clip_grad_norm_
    setup = Setup()
    run = setup.attach(url=live.url, every=4, run_name="clipping")
    returned = {}
    for step in range(8):
        x, y = next(setup.data)
        setup.criterion(setup.model(x), y).backward()
        if step % 2 == 0:  # clipped on even steps only
            parameters = setup.model.parameters()
            returned[step] = float(torch.nn.utils.clip_grad_norm_(parameters, MAX_NORM))
        setup.optimizer.step()
        setup.optimizer.zero_grad()
    run.detach()
    assert torch.nn.utils.clip_grad_norm_ is torchs_own  # put back at detach
    stored = live.stored("clipping")
    norms, clipped = stored.scalars["grad_norm"], stored.scalars["grad_norm_clipped"]
    assert sorted(norms) == list(range(8))
    assert sorted(clipped) == [0, 2, 4, 6]
    for step, before in returned.items():
        assert before > 10 * MAX_NORM
        assert norms[step] == pytest.approx(before, rel=1e-5)
        assert clipped[step] == pytest.approx(MAX_NORM, rel=1e-3)
    assert all(norms[step] > 10 * MAX_NORM for step in (1, 3, 5, 7))  # unclipped steps as-is
