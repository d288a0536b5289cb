"""Small seeded models and data for the capture agent's tests, handed out as fixtures.

Models (fixture ``make_model(kind, seed)``): ``"mlp"`` an MLP with dropout, ``"cnn"`` a small
CNN with BatchNorm, ``"resnet"`` a tiny residual network (BasicBlocks, one with a downsample
shortcut), ``"nan"`` an MLP whose middle layer outputs NaN on demand. Data (fixture ``blobs``):
Gaussian blobs whose class means differ, so that a few steps of training change something.
Everything is built from local generators or inside ``torch.random.fork_rng``.

Test modules use these through fixtures only: importing ``conftest`` by name would clash with
the other test folders' conftest modules.
"""

from __future__ import annotations

import logging
from typing import Callable

import pytest
import torch
from torch import nn

from sentrycam.capture.run import ACTIVE as _ACTIVE
from sentrycam.capture.transport import MemoryTransport

N_CLASSES = 4


def build(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """Instantiate ``factory`` with seeded initialisation, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


class MLP(nn.Module):
    """[B, 16] -> logits [B, 4]."""

    def __init__(self, dropout: float = 0.2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(32, 32)
        self.act2 = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc3 = nn.Linear(32, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.drop(self.act2(self.fc2(self.act1(self.fc1(x))))))


class SmallCNN(nn.Module):
    """[B, 1, 8, 8] -> logits [B, 4]; conv-BN-ReLU blocks in a Sequential, dropout head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(16, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(self.features(x)).flatten(1)))


class BasicBlock(nn.Module):
    """ResNet basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(branch + shortcut)


class TinyResNet(nn.Module):
    """[B, 1, 8, 8] -> logits [B, 4]: stem, three basic blocks (the second downsamples)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.layer3 = BasicBlock(16, 16)
        self.fc = nn.Linear(16, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class NaNSwitch(nn.Module):
    """Identity, or all-NaN output while ``on`` is True."""

    def __init__(self) -> None:
        super().__init__()
        self.on = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, float("nan")) if self.on else x


class NaNMLP(nn.Module):
    """[B, 16] -> logits [B, 4], with ``spike`` (a NaNSwitch) after the first layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.spike = NaNSwitch()
        self.fc2 = nn.Linear(32, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.spike(torch.relu(self.fc1(x))))


def blobs(n: int, shape: tuple[int, ...], seed: int = 0,
          n_classes: int = N_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs: inputs float32 [n, *shape], labels int64 [n] in 0..n_classes-1."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % n_classes
    centres = torch.randn(n_classes, *shape, generator=gen) * 2
    return centres[labels] + torch.randn(n, *shape, generator=gen), labels


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, *,
          optimizer: torch.optim.Optimizer | None = None, criterion: nn.Module | None = None,
          batch: int = 32, seed: int = 0, each_step: Callable[[int], None] | None = None
          ) -> torch.optim.Optimizer:
    """``steps`` SGD steps on random batches drawn with a local generator; returns the optimizer."""
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = criterion or nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(y), (batch,), generator=gen)
        optimizer.zero_grad()
        criterion(model(x[idx]), y[idx]).backward()
        optimizer.step()
        if each_step is not None:
            each_step(step)
    return optimizer


MODELS: dict[str, Callable[[], nn.Module]] = {
    "mlp": MLP, "cnn": SmallCNN, "resnet": TinyResNet, "nan": NaNMLP}
#: Input shape of one sample for each model kind.
INPUT_SHAPES = {"mlp": (16,), "cnn": (1, 8, 8), "resnet": (1, 8, 8), "nan": (16,)}


@pytest.fixture
def make_model() -> Callable[..., nn.Module]:
    """``make_model(kind, seed=0)``: a freshly initialised test model."""
    return lambda kind, seed=0: build(MODELS[kind], seed)


@pytest.fixture
def data() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``data(kind, n=128, seed=0)``: blobs shaped for that model kind."""
    return lambda kind, n=128, seed=0: blobs(n, INPUT_SHAPES[kind], seed)


@pytest.fixture(name="train")
def train_fixture() -> Callable[..., torch.optim.Optimizer]:
    """The :func:`train` loop."""
    return train


@pytest.fixture
def transport() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture(autouse=True)
def _no_run_left_attached():
    """A test that forgets to detach must not leak hooks into the next one."""
    yield
    for ref in list(_ACTIVE.values()):
        run = ref()
        if run is not None:
            run.detach("detached")


@pytest.fixture
def capture_warnings(caplog):
    caplog.set_level(logging.WARNING, logger="sentrycam")
    return caplog
