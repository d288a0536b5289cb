"""Capture on a CUDA device: pinned probe, deferred host copies, nothing lost at detach.

Skipped on machines without CUDA; run on a GPU machine to cover the device paths.
"""

import numpy as np
import pytest
import torch
from torch import nn

from sentrycam import capture
from sentrycam.capture.activations import STAT_NAMES
from sentrycam.capture.transport import MemoryTransport

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_capture_on_cuda_reports_every_step_and_snapshot(make_model, data):
    model = make_model("cnn").cuda()
    x, y = data("cnn", n=300)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), criterion=criterion, every=2,
                         overhead_budget=None, stats_every=1, transport=transport)
    assert run._runner.probe.inputs.is_pinned() and not run._runner.probe.inputs.is_cuda
    xc, yc = x.cuda(), y.cuda()
    losses = []
    for step in range(5):
        idx = torch.arange(step * 32, step * 32 + 32, device="cuda")
        optimizer.zero_grad()
        loss = criterion(model(xc[idx]), yc[idx])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    run.detach()  # the last step's values are still in flight until detach drains them
    scalars = [m for m in transport.of_kind("scalars") if "lr" in m.values]
    assert [m.step for m in scalars] == [0, 1, 2, 3, 4]
    assert [m.values["loss"] for m in scalars] == pytest.approx(losses, rel=1e-6)
    assert all(np.isfinite(m.values["grad_norm"]) for m in scalars)
    activation = [m for m in transport.of_kind("layer_stats") if m.stats == STAT_NAMES]
    assert [m.step for m in activation] == [0, 1, 2, 3, 4]
    snapshots = transport.of_kind("snapshot")
    assert [s.step for s in snapshots] == [0, 2, 4]
    assert all(f.dtype == np.float16 and f.shape[0] == 300
               for s in snapshots for f in s.features.values())
    assert not [e for e in transport.of_kind("event") if e.event == "capture_disabled"]
