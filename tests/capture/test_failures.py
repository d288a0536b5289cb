"""A failure inside capture disables capture with one warning; training never notices."""

import pytest
import torch
from torch import nn

from sentrycam import capture
from sentrycam.capture.transport import MemoryTransport


class Boxed:
    """Not a tensor, and not a tuple/list/dict either: a captured layer cannot pool it."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


class Boxer(nn.Module):
    """Identity until ``box`` is set; then wraps its output in a :class:`Boxed`."""

    def __init__(self) -> None:
        super().__init__()
        self.box = False

    def forward(self, x: torch.Tensor):
        return Boxed(x) if self.box else x


class BoxedMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.boxer = Boxer()
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.boxer(torch.relu(self.fc1(x)))
        return self.fc2(hidden.tensor if isinstance(hidden, Boxed) else hidden)


def _train_with_failure_at(step_to_break, transport, data, **attach_kwargs):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BoxedMLP()
    x, y = data("mlp")
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = capture.attach(model, probe=(x, y), layers=["boxer", "fc2:input"],
                         criterion=criterion, overhead_budget=None, transport=transport,
                         **attach_kwargs)
    losses = []
    for step in range(8):
        model.boxer.box = step >= step_to_break
        optimizer.zero_grad()
        loss = criterion(model(x[:16]), y[:16])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    run.detach()
    return run, losses


@pytest.mark.parametrize("where, attach_kwargs", [
    ("activation statistics", dict(stats_every=1, every=100)),  # fails in a training forward
    ("post-step hook", dict(stats_every=1000, every=2)),  # fails in a snapshot's probe forward
])
def test_an_error_in_capture_disables_it_with_one_warning(data, capture_warnings, where,
                                                          attach_kwargs):
    transport = MemoryTransport()
    run, losses = _train_with_failure_at(3, transport, data, **attach_kwargs)
    assert len(losses) == 8 and all(loss == loss for loss in losses)  # training went on
    warnings = [r for r in capture_warnings.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "capture is disabled" in warnings[0].getMessage() and where in warnings[0].getMessage()
    assert warnings[0].exc_info is not None  # the traceback is logged
    disabled = [e for e in transport.of_kind("event") if e.event == "capture_disabled"]
    assert len(disabled) == 1 and "Boxed" in disabled[0].message
    failed_at = disabled[0].step
    assert failed_at in (3, 4)
    later = [m for m in transport.messages
             if m.kind in ("scalars", "snapshot", "layer_stats") and m.step > failed_at]
    assert later == []  # nothing captured after the failure
    end = transport.messages[-1]
    assert end.kind == "run_end" and end.step == 7 and run.step == 8  # 8 steps: 0..7
