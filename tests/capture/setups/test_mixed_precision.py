"""bf16 autocast on CPU and a gradient scaler: features are stored, skipped steps not counted."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sentrycam.capture import attach
from sentrycam.capture.transport import MemoryTransport
from sentrycam.protocol.messages import Scalars, Snapshot
from tests.capture.setups.tiny_training import batches, make_data, make_model


@pytest.mark.slow
def test_bf16_autocast_streams_losses_and_finite_snapshots(live):
    model, criterion = make_model(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = attach(model, make_data(), criterion=criterion, optimizer=optimizer, url=live.url,
                 every=3, overhead_budget=None, run_name="bf16")
    data = batches(*make_data())
    for _ in range(9):
        x, y = next(data)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = criterion(model(x), y)
        assert loss.dtype == torch.float32 and model(x).dtype == torch.float32
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    run.detach()
    stored = live.stored("bf16")
    assert sorted(stored.scalars["loss"]) == list(range(9))
    assert all(math.isfinite(v) for v in stored.scalars["loss"].values())
    assert stored.snapshot_steps[:3] == [0, 3, 6]
    assert {m["step"] for m in stored.maps} == set(stored.snapshot_steps)


def test_snapshots_taken_inside_an_autocast_region_are_finite():
    """A loop that steps inside its autocast block: the probe forward then runs in bf16."""
    transport = MemoryTransport()
    model, criterion = make_model(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = attach(model, make_data(), criterion=criterion, optimizer=optimizer,
                 transport=transport, every=2, overhead_budget=None)
    x, y = make_data(16)
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
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
    model, criterion = make_model(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    run = attach(model, None, criterion=criterion, optimizer=optimizer, transport=transport,
                 overhead_budget=None)
    data = batches(*make_data())
    for iteration in range(8):
        x, y = next(data)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = criterion(model(x), y)
        if iteration in (2, 5):  # an overflow: the scaler skips this update
            loss = loss * math.inf
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    assert run.step == 6
    run.detach()
    losses = {m.step: m.values["loss"] for m in transport.messages
              if isinstance(m, Scalars) and "loss" in m.values}
    assert sorted(losses) == list(range(6))
    assert all(math.isfinite(v) for v in losses.values())
