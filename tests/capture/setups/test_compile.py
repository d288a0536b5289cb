"""``torch.compile``: attaching before or after compiling both stream the run, under the
model's own layer names. Slow: the first inductor compile in a process takes about a minute
on these 2-core machines."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sentrycam.capture import attach
from tests.capture.setups.tiny_training import batches, make_data, make_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("order", ["attach-then-compile", "compile-then-attach"])
def test_a_compiled_model_streams_steps_and_snapshots(live, order):
    model, criterion = make_model(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    if order == "compile-then-attach":
        model = torch.compile(model)
    run = attach(model, make_data(), criterion=criterion, optimizer=optimizer, url=live.url,
                 every=2, overhead_budget=None, run_name=order)
    if order == "attach-then-compile":
        model = torch.compile(model)
    data = batches(*make_data())
    for _ in range(6):
        x, y = next(data)
        criterion(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert run.layers == ["0", "2", "4:input"]  # as for the eager model: no "_orig_mod." prefix
    run.detach()
    stored = live.stored(order)
    assert sorted(stored.scalars["loss"]) == list(range(6))
    assert stored.snapshot_steps[:3] == [0, 2, 4]
    assert {m["step"] for m in stored.maps} == set(stored.snapshot_steps)
