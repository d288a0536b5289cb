"""bf16 autocast on CPU and a gradient scaler: features are stored, skipped steps not counted."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from sentrycam.capture.transport import MemoryTransport
from sentrycam.protocol.messages import Snapshot
from tests.capture.setups.tiny_training import Setup

bf16 = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)


@pytest.mark.slow
def test_bf16_autocast_streams_losses_and_finite_snapshots(live):
    setup = Setup()
    run = setup.attach(url=live.url, every=3, run_name="bf16")
    for _ in range(9):
        setup.step(bf16)
    run.detach()
    stored = live.stored("bf16")
    assert sorted(stored.scalars["loss"]) == list(range(9))
    assert all(math.isfinite(v) for v in stored.scalars["loss"].values())
    assert stored.snapshot_steps[:3] == [0, 3, 6]
    assert {m["step"] for m in stored.maps} == set(stored.snapshot_steps)


def test_snapshots_taken_inside_an_autocast_region_are_finite():
    """A loop that steps inside its autocast block: the probe forward then runs in bf16."""
    transport = MemoryTransport()
    setup = Setup()
    run = setup.attach(transport=transport, every=2)
    with bf16():
        for _ in range(3):
            setup.step()
    run.detach()
    snapshots = [m for m in transport.messages if isinstance(m, Snapshot)]
    assert snapshots
    for snapshot in snapshots:
        assert not any(snapshot.nonfinite.values())
        for features in snapshot.features.values():
            values = np.asarray(features, dtype=np.float32)
            assert values.size and np.isfinite(values).all()


def test_steps_a_gradient_scaler_skips_are_not_counted():
    transport = MemoryTransport()
    setup = Setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    run = setup.attach(transport=transport)
    for iteration in range(8):
        x, y = next(setup.data)
        with bf16():
            loss = setup.criterion(setup.model(x), y)
        if iteration in (2, 5):  # an overflow: the scaler skips this update
            loss = loss * math.inf
        scaler.scale(loss).backward()
        scaler.step(setup.optimizer)
        scaler.update()
        setup.optimizer.zero_grad()
    assert run.step == 6
    run.detach()
    losses = {m.step: m.values["loss"] for m in transport.of_kind("scalars")
              if "loss" in m.values}
    assert sorted(losses) == list(range(6))
    assert all(math.isfinite(v) for v in losses.values())
