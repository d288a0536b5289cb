"""Data, models and failure injections of the audit scenario benchmark (see scenarios.py).

Three offline tasks, one architecture each: an MLP on sklearn ``make_classification`` data, a
small CNN on sklearn digits, a GRU on a synthetic sequence task. Failures are injected at a known
step by a :class:`Injection` that the training loop calls around each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Task:
    """Train/validation tensors: x float32 [N, ...], y int64 [N] in 0..n_classes-1."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_classes: int


def _split(x: np.ndarray, y: np.ndarray, seed: int, n_classes: int) -> Task:
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = len(y) // 5
    val, train = order[:n_val], order[n_val:]
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    return Task(xt[train], yt[train], xt[val], yt[val], n_classes)


def tabular_task(seed: int) -> Task:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=1500, n_features=20, n_informative=12, n_redundant=4,
                               n_classes=6, n_clusters_per_class=1, class_sep=1.6,
                               random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    return _split(x, y, seed, 6)


def digits_task(seed: int) -> Task:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _split((digits.images / 16.0)[:, None], digits.target, seed, 10)


def sequence_task(seed: int, length: int = 12, dim: int = 6, n_classes: int = 6) -> Task:
    """Each class is a prototype sequence [length, dim]; samples add noise and a random shift."""
    rng = np.random.default_rng(1000 + seed)
    prototypes = rng.normal(size=(n_classes, length, dim))
    y = rng.integers(0, n_classes, size=1500)
    shift = rng.integers(0, 3, size=len(y))
    x = np.stack([np.roll(prototypes[c], s, axis=0) for c, s in zip(y, shift)])
    x = x + rng.normal(scale=1.2, size=x.shape)
    return _split(x, y, seed, n_classes)


class MLP(nn.Module):
    def __init__(self, n_in: int, n_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def hidden_linear(self) -> nn.Linear:
        return self.body[3]


class CNN(nn.Module):
    def __init__(self, n_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.body = nn.Sequential(nn.Linear(2 * width, 64), nn.ReLU())
        self.head = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.features(x)))

    def hidden_linear(self) -> nn.Linear:
        return self.body[0]


class GRUClassifier(nn.Module):
    def __init__(self, dim: int, n_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.body = nn.Sequential(nn.Linear(hidden, 64), nn.ReLU())
        self.head = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(x)
        return self.head(self.body(last[-1]))

    def hidden_linear(self) -> nn.Linear:
        return self.body[0]


ARCHITECTURES: dict[str, tuple[Callable[[int], Task], Callable[[Task], nn.Module]]] = {
    "mlp": (tabular_task, lambda t: MLP(t.x_train[0].numel(), t.n_classes)),
    "cnn": (digits_task, lambda t: CNN(t.n_classes)),
    "gru": (sequence_task, lambda t: GRUClassifier(t.x_train.shape[-1], t.n_classes)),
}


def build(arch: str, seed: int) -> tuple[Task, nn.Module]:
    make_task, make_model = ARCHITECTURES[arch]
    task = make_task(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model(task)
    return task, model


def _vanish(grad: torch.Tensor) -> torch.Tensor:
    return grad * 1e-6


class Injection:
    """A failure injected from step ``at`` on. ``batch`` may rewrite a batch, ``before_step``
    acts between backward and the optimizer step, ``at_start`` once at step ``at``."""

    def __init__(self, kind: str, at: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                 task: Task, seed: int) -> None:
        self.kind, self.at, self.model, self.optimizer, self.task = kind, at, model, optimizer, task
        self.rng = torch.Generator().manual_seed(seed + 77)
        self.base_lr = optimizer.param_groups[0]["lr"]

    def active(self, step: int) -> bool:
        return self.kind != "healthy" and step >= self.at

    def batch(self, step: int, xb: torch.Tensor, yb: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active(step):
            return xb, yb
        if self.kind == "label_noise":
            flip = torch.rand(len(yb), generator=self.rng) < 0.6
            random = torch.randint(0, self.task.n_classes, (len(yb),), generator=self.rng)
            return xb, torch.where(flip, random, yb)
        if self.kind == "forgetting":  # task B: only the upper half of the classes
            keep = yb >= self.task.n_classes // 2
            if keep.sum() < 4:
                return xb[:0], yb[:0]
            return xb[keep], yb[keep]
        return xb, yb

    def at_start(self, step: int) -> None:
        if step != self.at:
            return
        if self.kind == "lr_spike":
            for group in self.optimizer.param_groups:
                group["lr"] = self.base_lr * 25
        elif self.kind == "dead_units":
            with torch.no_grad():
                layer = self.model.hidden_linear()
                n = layer.bias.numel()
                dead = torch.randperm(n, generator=self.rng)[: int(0.7 * n)]
                layer.bias[dead] -= 50.0
        elif self.kind == "optimizer_corruption":
            for state in self.optimizer.state.values():
                if "exp_avg_sq" in state:
                    state["exp_avg_sq"].mul_(1e-5)
        elif self.kind == "vanishing_gradients":
            # Scaled as backward computes them, as vanishing gradients arise: an in-place change
            # after backward would read to capture as clipping (the norm before it is recorded).
            for p in self.model.parameters():
                p.register_hook(_vanish)

    def before_step(self, step: int) -> None:
        if not self.active(step):
            return
        if self.kind == "slow_divergence":
            for group in self.optimizer.param_groups:
                group["lr"] = self.base_lr * 1.025 ** (step - self.at + 1)

    def train_subset(self, step: int) -> bool:
        """Overfitting: from ``at`` on, training sees only a small fixed subset."""
        return self.kind == "overfitting" and step >= self.at
