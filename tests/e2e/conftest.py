"""Fixtures of the end-to-end tests: small seeded trainings, and the system's Chromium driven by
Playwright (real `sentrycam serve` processes come from the ``server_process`` fixture of
:mod:`tests.server_process`).

Chromium comes from the OS (``apt-get install chromium``; CI installs it in .ci/run), never from
``playwright install``. Without it the browser tests skip on a developer machine, and FAIL when
the ``CI`` environment variable is set, so CI can never pass them by skipping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import pytest
import torch
from torch import nn

from sentrycam.capture import demo
from sentrycam.frontend.testing import chromium_path, launch_chromium
from tests.prerequisites import missing

PAGE_TIMEOUT_MS = 60_000


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """The system's headless Chromium (one per test module)."""
    path = chromium_path()
    if path is None:
        missing("chromium is not installed (apt-get install -y chromium)",
                "run the browser tests")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh 1500 x 1200 page of ``browser``, closed after the test."""
    context = browser.new_context(viewport={"width": 1500, "height": 1200})
    opened = context.new_page()
    opened.set_default_timeout(PAGE_TIMEOUT_MS)
    yield opened
    context.close()
