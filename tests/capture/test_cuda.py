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


def _train_on_cuda(model, x, y, steps: int, each_step=None) -> None:
    """``steps`` SGD steps on batches drawn with a local generator, all on the GPU."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    xc, yc = x.cuda(), y.cuda()
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=gen).cuda()
        optimizer.zero_grad()
        criterion(model(xc[idx]), yc[idx]).backward()
        optimizer.step()
        if each_step is not None:
            each_step(step)


def _one_shot_snapshot(make_model, state: dict, x, y):
    """The snapshot a one-shot probe pass takes of a CUDA model holding ``state``."""
    model = make_model("cnn").cuda()
    model.load_state_dict(state)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), overhead_budget=None, transport=transport)
    run.snapshot()
    run.detach()
    (snapshot,) = transport.of_kind("snapshot")
    return snapshot


def test_a_snapshot_spread_over_cuda_steps_equals_a_one_shot_pass_at_its_step(make_model,
                                                                                data):
    model = make_model("cnn").cuda()
    x, y = data("cnn", n=300)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), every=10, overhead_budget=None,
                         transport=transport)
    at_step_10 = {}

    def each_step(step: int) -> None:
        if step == 10:
            at_step_10.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    _train_on_cuda(model, x, y, 20, each_step)
    run.detach()
    spread = {s.step: s for s in transport.of_kind("snapshot")}[10]
    expected = _one_shot_snapshot(make_model, at_step_10, x, y)
    assert spread.features.keys() == expected.features.keys()
    for layer, features in spread.features.items():
        np.testing.assert_allclose(features.astype(np.float32),
                                   expected.features[layer].astype(np.float32),
                                   rtol=1e-3, atol=1e-3)
    assert spread.step == 10 and spread.nonfinite == expected.nonfinite


@pytest.fixture
def deterministic_cuda():
    """cuDNN's deterministic kernels for the test, restored after."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@pytest.mark.parametrize("kind", ["cnn", "resnet", "mlp"])
def test_training_on_cuda_is_bit_identical_with_and_without_capture(make_model, data, kind,
                                                                     deterministic_cuda):
    x, y = data(kind, n=160)

    def final_state(watched: bool) -> dict:
        model = make_model(kind, seed=1).cuda()
        run = (capture.attach(model, probe=(x, y), every=2, overhead_budget=None,
                              stats_every=1, transport=MemoryTransport()) if watched else None)
        torch.manual_seed(123)  # dropout draws from the global RNG: attach must not touch it
        _train_on_cuda(model, x, y, 14)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if run is not None:
            run.detach()
        return state

    unwatched, again = final_state(False), final_state(False)
    for name, value in unwatched.items():  # the baseline itself is deterministic
        assert torch.equal(value, again[name]), name
    watched = final_state(True)
    for name, value in unwatched.items():  # BatchNorm running stats included
        assert torch.equal(value, watched[name]), name
