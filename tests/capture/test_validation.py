"""Bad arguments to attach get a ValueError naming the problem and the fix, and leave no hooks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import optimizer as torch_optimizer
from torch.utils.data import IterableDataset

from sentrycam import capture
from sentrycam.capture.transport import MemoryTransport


class Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(16), 0


def _cases(x, y, model):
    """(attach kwargs, message pattern) for every documented bad input."""
    other = nn.Linear(2, 2)
    return [
        (dict(probe=(torch.randn(8, 10), y[:8])), r"rejected probe inputs of shape \(2, 10\)"),
        (dict(probe=(x[:10], y[:9])), r"10 inputs but 9 labels"),
        (dict(probe=(x[:0], y[:0])), r"probe is empty"),
        (dict(probe=(x, y.float())), r"labels must be a 1-D integer tensor"),
        (dict(probe=(x, y + 10)), r"labels go up to 13 but the model outputs 4 classes"),
        (dict(probe=Stream()), r"IterableDataset"),
        (dict(probe="data.csv"), r"tuple \(inputs, labels\), a Dataset or a DataLoader"),
        (dict(probe=(x, y), layers=["fc9"]), r"'fc9' is not a module.*'fc1'"),
        (dict(probe=(x, y), criterion=F.cross_entropy), r"run\.log\(loss=\.\.\.\)"),
        (dict(probe=(x, y), optimizer=torch.optim.SGD(other.parameters(), lr=0.1)),
         r"updates none of the model's parameters"),
        (dict(probe=(x, y), every=0), r"every must be a positive number of optimizer steps"),
        (dict(probe=(x, y), every=2.5), r"every must be"),
        (dict(probe=(x, y), every="daily"), r"every must be"),
        (dict(probe=(x, y), every=True), r"every must be"),
        (dict(probe=(x, y), overhead_budget=0), r"overhead_budget must be a fraction in \(0, 1\]"),
        (dict(probe=(x, y), overhead_budget=1.5), r"overhead_budget must be"),
        (dict(probe=(x, y), overhead_budget="1%"), r"overhead_budget must be"),
        (dict(heldout=(x, y)), r"heldout needs a probe"),
        (dict(probe=(x, y), probe_size=0), r"probe_size must be a positive integer"),
        (dict(probe=(x, y), token_pool="max"), r"token_pool must be one of"),
        (dict(probe=(x, y), url="http://x", db="a.duckdb"), r"not both"),
    ]


def test_every_bad_argument_is_named(make_model, data):
    model = make_model("mlp")
    x, y = data("mlp", n=32)
    for kwargs, pattern in _cases(x, y, model):
        with pytest.raises(ValueError, match=pattern):
            capture.attach(model, transport=MemoryTransport(), **kwargs)
        hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        assert hooks == 0, kwargs  # a refused attach leaves nothing behind
    assert len(torch_optimizer._global_optimizer_pre_hooks) == 0


def test_a_model_without_parameters_is_refused():
    with pytest.raises(ValueError, match="no parameters"):
        capture.attach(nn.Sequential(nn.ReLU()), transport=MemoryTransport())
    with pytest.raises(ValueError, match="needs a torch.nn.Module"):
        capture.attach(lambda x: x, transport=MemoryTransport())


def test_run_log_refuses_non_numbers(make_model):
    run = capture.attach(make_model("mlp"), transport=MemoryTransport())
    with pytest.raises(ValueError, match=r"run\.log\(val_acc=\.\.\.\) needs a number, got str"):
        run.log(val_acc="high")
    with pytest.raises(ValueError, match="whole number"):
        run.log(epoch=1.5)
    with pytest.raises(ValueError, match="status must be one of"):
        run.detach(status="done")
    run.detach()
