"""What a user reads when ``attach`` meets data or a model it cannot watch, and the trainer's
warning when a layer goes non-finite."""

import math

import pytest
import torch
from torch import nn

from sentrycam import capture
from sentrycam.capture.transport import MemoryTransport


def _poisoned(x: torch.Tensor, rows: list[int], value: float) -> torch.Tensor:
    x = x.clone()
    x[rows, 0] = value
    return x


def test_a_probe_with_nan_is_refused_naming_the_samples(make_model, data):
    model = make_model("mlp")
    x, y = data("mlp", n=600)  # more than one chunk of the check
    with pytest.raises(ValueError) as refused:
        capture.attach(model, probe=(_poisoned(x, [3, 40, 400], math.nan), y),
                       transport=MemoryTransport())
    text = str(refused.value)
    assert "probe data has NaN or Inf input values in 3 of the 600 samples" in text
    assert "3, 40, 400)" in text and "torch.isfinite" in text
    assert not capture.run.ACTIVE.get(model), "nothing stays attached after a refusal"


def test_inf_in_the_heldout_split_is_named_as_heldout(make_model, data):
    model = make_model("mlp")
    x, y = data("mlp", n=64)
    hx, hy = data("mlp", n=32, seed=1)
    with pytest.raises(ValueError, match=r"heldout data has NaN or Inf input values in 1 of "
                                         r"the 32 samples selected \(indices in the heldout "
                                         r"source: 7\)"):
        capture.attach(model, probe=(x, y), heldout=(_poisoned(hx, [7], math.inf), hy),
                       transport=MemoryTransport())


def test_integer_token_probes_are_not_checked_for_nan():
    model = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(8 * 6, 3))
    tokens = torch.randint(0, 50, (20, 6), generator=torch.Generator().manual_seed(0))
    run = capture.attach(model, probe=(tokens, torch.arange(20) % 3), layers=["2:input"],
                         transport=MemoryTransport())
    run.detach()
    assert run.run_id


def test_a_model_on_the_meta_device_is_refused():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    with pytest.raises(ValueError) as refused:
        capture.attach(model, transport=MemoryTransport())
    text = str(refused.value)
    assert "4 tensors on the 'meta' device ('0.weight', '0.bias', '2.weight', ...)" in text
    assert "to_empty" in text


class _NaNAfter(nn.Module):
    """Identity until ``on``, then NaN (a layer of a Sequential, so its name is a number)."""

    def __init__(self) -> None:
        super().__init__()
        self.on = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, math.nan) if self.on else x


def test_the_nan_warning_names_a_numbered_layer_as_a_layer(data, capture_warnings):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 32), _NaNAfter(), nn.Linear(32, 4))
    x, y = data("mlp", n=32)
    transport = MemoryTransport()
    criterion = nn.CrossEntropyLoss()
    run = capture.attach(model, probe=(x, y), layers=["1"], criterion=criterion,
                         overhead_budget=None, stats_every=1, transport=transport)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(4):
        model[1].on = step >= 2
        optimizer.zero_grad()
        criterion(model(x[:16]), y[:16]).backward()
        optimizer.step()
    run.detach()
    warned = [r.getMessage() for r in capture_warnings.records if "NaN/Inf" in r.getMessage()]
    assert "sentrycam: layer '1' has NaN/Inf values at step 2" in warned
    assert "sentrycam: the training loss is NaN/Inf at step 2" in warned
    events = [e.message for e in transport.of_kind("event") if e.event == "nonfinite"]
    assert "layer '1' has NaN/Inf values at step 2" in events
