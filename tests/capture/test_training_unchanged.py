"""Being watched must not change training: parameters after K steps are bit-identical."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sentrycam import capture
from sentrycam.capture.transport import MemoryTransport

STEPS = 14

# Every activity as often as it can go (snapshots every 2 steps, statistics and telemetry every
# step), and the defaults (budget-controlled schedule).
BUSY = dict(every=2, overhead_budget=None, stats_every=1)
DEFAULT: dict = {}


@pytest.fixture
def train_through_loader(make_model, data):
    def run_training(kind, attach_kwargs, *, pass_optimizer=False, hook_criterion=False):
        """``STEPS`` steps from seed 1 through a shuffling DataLoader, watched when
        ``attach_kwargs`` is not None; returns (final state dict, snapshots sent)."""
        model = make_model(kind, seed=1)
        x, y = data(kind, n=160, seed=2)
        loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
        criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        # Shuffling and dropout both draw from the global RNG: attach must not touch it.
        torch.manual_seed(123)
        run = None
        if attach_kwargs is not None:
            run = capture.attach(model, probe=loader, heldout=(x[:40], y[:40]),
                                 criterion=criterion if hook_criterion else None,
                                 optimizer=optimizer if pass_optimizer else None,
                                 transport=MemoryTransport(), **attach_kwargs)
        step = 0
        model.train()
        while step < STEPS:
            for xb, yb in loader:
                optimizer.zero_grad()
                loss = criterion(model(xb), yb)
                loss.backward()
                optimizer.step()
                if run is not None:
                    run.log(train_loss=loss.item(), epoch=step // 5)
                step += 1
                if step == STEPS:
                    break
        if run is None:
            return model.state_dict(), []
        assert run.step == STEPS
        state = model.state_dict()  # the live tensors: detaching must not change them either
        run.detach()  # finishes a snapshot whose probe pass is still spread over steps
        return state, run._transport.of_kind("snapshot")
    return run_training


@pytest.mark.parametrize("kind", ["cnn", "resnet", "mlp"])
@pytest.mark.parametrize("settings, pass_optimizer, hook_criterion", [
    (BUSY, True, True), (BUSY, False, False), (DEFAULT, False, True)])
def test_parameters_and_buffers_are_bit_identical_with_and_without_capture(
        train_through_loader, kind, settings, pass_optimizer, hook_criterion):
    unwatched, _ = train_through_loader(kind, None)
    watched, snapshots = train_through_loader(kind, settings, pass_optimizer=pass_optimizer,
                                              hook_criterion=hook_criterion)
    if settings is BUSY:
        assert len(snapshots) == STEPS // 2  # the capture really ran: steps 0, 2, ..., 12
    assert unwatched.keys() == watched.keys()
    for name, value in unwatched.items():  # BatchNorm running stats included
        assert torch.equal(value, watched[name]), name


def test_epoch_snapshots_leave_training_unchanged(train_through_loader):
    unwatched, _ = train_through_loader("cnn", None)
    watched, snapshots = train_through_loader("cnn", dict(every="epoch", overhead_budget=None),
                                              hook_criterion=True)
    assert [s.epoch for s in snapshots] == [0, 1, 2]
    for name, value in unwatched.items():
        assert torch.equal(value, watched[name]), name
