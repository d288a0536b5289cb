"""A small seeded classifier, its data and batches for the training-setup tests."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from sentrycam.capture import attach

CLASSES, FEATURES = 3, 8


def make_model(seed: int = 0) -> nn.Sequential:
    """[B, 8] float32 -> logits [B, 3], seeded without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                             nn.Linear(16, CLASSES))


def make_data(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs float32 [n, 8], labels int64 [n]): blobs whose class means differ."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    return torch.randn(n, FEATURES, generator=gen) + 2.0 * nn.functional.one_hot(y, FEATURES), y


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 16):
    """Forever, in order: (inputs [size, 8], labels [size])."""
    while True:
        for start in range(0, len(x) - size + 1, size):
            yield x[start:start + size], y[start:start + size]


class Setup:
    """The model, its loss, an SGD optimizer (or ``optimizer(model)``) and endless batches."""

    def __init__(self, optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None
                 ) -> None:
        self.model: nn.Module = make_model()
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = (optimizer(self.model) if optimizer is not None
                          else torch.optim.SGD(self.model.parameters(), lr=0.05))
        self.data = batches(*make_data())

    def attach(self, **attach_kwargs: Any) -> Any:
        """``attach`` with the probe, criterion and optimizer, on a fixed schedule."""
        return attach(self.model, make_data(), criterion=self.criterion,
                      optimizer=self.optimizer, overhead_budget=None, **attach_kwargs)

    def step(self, forward: Callable[[], ContextManager] = contextlib.nullcontext) -> None:
        """One training step, its forward (and loss) inside ``forward()``."""
        x, y = next(self.data)
        with forward():
            loss = self.criterion(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
