"""The built-in demo: a small CNN trained on sklearn's bundled digits (offline, 1,797 8x8 images).

Used by ``sentrycam demo`` and by ``benchmarks/capture_overhead.py``. Everything is seeded with
local generators, so two runs with the same seed train identically.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DigitsData:
    """Digits split into train and validation.

    ``x_*`` float32 [N, 1, 8, 8] scaled to [0, 1]; ``y_*`` int64 [N] in 0..9.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def load_digits_data(seed: int = 0, val_fraction: float = 0.2) -> DigitsData:
    """sklearn's ``load_digits`` as tensors, split with a seeded permutation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    n_val = int(round(len(y) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return DigitsData(x[train], y[train], x[val], y[val])


class DigitsCNN(nn.Module):
    """Three conv blocks (conv-BN-ReLU), global average pool, a two-layer head.

    Input float32 [B, 1, 8, 8]; output logits float32 [B, 10].
    """

    def __init__(self, n_classes: int = 10, width: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(4 * width, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DigitsMLP(nn.Module):
    """A tiny MLP on flattened digits: [B, 1, 8, 8] -> logits [B, 10]."""

    def __init__(self, n_classes: int = 10, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_model(kind: str = "cnn", seed: int = 0) -> nn.Module:
    """A freshly initialised demo model (``"cnn"`` or ``"mlp"``), seeded without touching global RNG."""
    builders = {"cnn": DigitsCNN, "mlp": DigitsMLP}
    if kind not in builders:
        raise ValueError(f"unknown demo model {kind!r}; choose one of {sorted(builders)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builders[kind]()


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int,
            seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Endless shuffled mini-batches ``(x [B, ...], y [B], epoch)`` from a local generator."""
    gen = torch.Generator().manual_seed(seed)
    epoch = 0
    while True:
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], y[idx], epoch
        epoch += 1


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on (x, y), in eval mode, restoring the previous mode."""
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(1) == y).float().mean().item()
    finally:
        model.train(was_training)
    return loss, acc


def train(steps: int, *, attach: Callable[..., Any] | None = None, seed: int = 0,
          batch_size: int = 64, lr: float = 2e-3, model_kind: str = "cnn",
          on_epoch: Callable[[int, float, float], None] | None = None) -> dict[str, float]:
    """Train the demo model for ``steps`` optimizer steps.

    ``attach(model, probe=..., heldout=..., criterion=..., optimizer=...)`` is called once before
    training when given (``sentrycam.capture.attach`` with the caller's own arguments bound), and the
    run it returns receives ``epoch``, ``val_loss`` and ``val_acc`` at each epoch end and is
    detached at the end. Returns the final validation loss and accuracy.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    data = load_digits_data(seed)
    model = build_model(model_kind, seed)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    run = None
    if attach is not None:
        run = attach(model, probe=(data.x_train, data.y_train), heldout=(data.x_val, data.y_val),
                     criterion=criterion, optimizer=optimizer)
    try:
        # Dropout draws from torch's global generator: seed it for this run only, so that two
        # runs with the same seed train identically and the caller's generator is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _train_loop(model, optimizer, criterion, data, steps, batch_size, seed, run,
                        on_epoch)
    except BaseException:
        if run is not None:
            run.detach(status="failed")
        raise
    val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
    if run is not None:
        run.log(val_loss=val_loss, val_acc=val_acc)
        run.detach()
    return {"val_loss": val_loss, "val_acc": val_acc}


def _train_loop(model, optimizer, criterion, data: DigitsData, steps: int, batch_size: int,
                seed: int, run, on_epoch) -> None:
    model.train()
    current_epoch = 0
    for step, (xb, yb, epoch) in zip(range(steps), batches(data.x_train, data.y_train,
                                                             batch_size, seed)):
        if epoch != current_epoch:
            _end_epoch(model, data, current_epoch, run, on_epoch)
            current_epoch = epoch
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(xb), yb)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 and not math.isfinite(loss.item()):
            log.warning("demo loss is not finite at step %d", step)


def _end_epoch(model, data: DigitsData, epoch: int, run, on_epoch) -> None:
    val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
    if run is not None:
        run.log(epoch=epoch + 1, val_loss=val_loss, val_acc=val_acc)
    if on_epoch is not None:
        on_epoch(epoch, val_loss, val_acc)
