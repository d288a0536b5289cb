"""``torch.compile``: attaching before or after compiling both stream the run, under the
model's own layer names. Slow: the first inductor compile in a process takes about a minute
on these 2-core machines."""

from __future__ import annotations

import pytest
import torch

from tests.capture.setups.tiny_training import Setup

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("order", ["attach-then-compile", "compile-then-attach"])
def test_a_compiled_model_streams_steps_and_snapshots(live, order):
    setup = Setup()
    if order == "compile-then-attach":
        setup.model = torch.compile(setup.model)
    run = setup.attach(url=live.url, every=2, run_name=order)
    if order == "attach-then-compile":
        setup.model = torch.compile(setup.model)
    for _ in range(6):
        setup.step()
    assert run.layers == ["0", "2", "4:input"]  # as for the eager model: no "_orig_mod." prefix
    run.detach()
    stored = live.stored(order)
    assert sorted(stored.scalars["loss"]) == list(range(6))
    assert stored.snapshot_steps[:3] == [0, 2, 4]
    assert {m["step"] for m in stored.maps} == set(stored.snapshot_steps)
