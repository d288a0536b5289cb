"""Fixtures of the end-to-end tests: small seeded trainings (real `sentrycam serve` processes
come from the ``server_process`` fixture of :mod:`tests.server_process`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from sentrycam.capture import demo


@dataclass
class Trainer:
    """A seeded MLP on digits that trains step by step, so tests can act between steps."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    data: demo.DigitsData
    batches: object
    steps_done: int = 0

    def train(self, steps: int) -> None:
        for _, (xb, yb, _epoch) in zip(range(steps), self.batches):
            self.optimizer.zero_grad(set_to_none=True)
            self.criterion(self.model(xb), yb).backward()
            self.optimizer.step()
            self.steps_done += 1


@pytest.fixture
def trainer() -> Trainer:
    data = demo.load_digits_data(seed=0)
    model = demo.build_model("mlp", seed=0)
    return Trainer(model, torch.optim.Adam(model.parameters(), lr=2e-3), nn.CrossEntropyLoss(),
                   data, demo.batches(data.x_train, data.y_train, 64, seed=0))


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run the test from tmp_path, so ./sentrycam-runs lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SENTRYCAM_URL", raising=False)
    return tmp_path
