"""Data, models and failure injections of the audit scenario benchmark (see scenarios.py).

Four offline tasks, one architecture each: an MLP on sklearn ``make_classification`` data, a
small CNN on sklearn digits, a GRU on a synthetic sequence task, a one-layer transformer on a
synthetic token task. The failures injected into them are in scenario_failures.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Task:
    """Train/validation tensors: x float32 [N, ...] (int64 [N, L] token ids in 0..vocab-1 when
    ``vocab`` > 0), y int64 [N] in 0..n_classes-1."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_classes: int
    vocab: int = 0


def _split(x: np.ndarray, y: np.ndarray, seed: int, n_classes: int, vocab: int = 0) -> Task:
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = len(y) // 5
    val, train = order[:n_val], order[n_val:]
    xt = torch.from_numpy(x.astype(np.int64 if vocab else np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    return Task(xt[train], yt[train], xt[val], yt[val], n_classes, vocab)


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


def token_task(seed: int, length: int = 12, vocab: int = 16, n_classes: int = 6) -> Task:
    """Each class is a prototype token sequence; samples replace 35% of the tokens at random."""
    rng = np.random.default_rng(2000 + seed)
    prototypes = rng.integers(0, vocab, size=(n_classes, length))
    y = rng.integers(0, n_classes, size=1500)
    x = prototypes[y]
    noise = rng.random(x.shape) < 0.35
    x = np.where(noise, rng.integers(0, vocab, size=x.shape), x)
    return _split(x, y, seed, n_classes, vocab)


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


class TinyTransformer(nn.Module):
    """Token embedding + learned positions, one encoder layer, mean pooling, a ReLU body."""

    def __init__(self, vocab: int, length: int, n_classes: int, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.zeros(length, dim))
        self.encoder = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=64,
                                                  dropout=0.0, batch_first=True)
        self.body = nn.Sequential(nn.Linear(dim, 64), nn.ReLU())
        self.head = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embed(x) + self.position)
        return self.head(self.body(hidden.mean(dim=1)))

    def hidden_linear(self) -> nn.Linear:
        return self.body[0]


ARCHITECTURES: dict[str, tuple[Callable[[int], Task], Callable[[Task], nn.Module]]] = {
    "mlp": (tabular_task, lambda t: MLP(t.x_train[0].numel(), t.n_classes)),
    "cnn": (digits_task, lambda t: CNN(t.n_classes)),
    "gru": (sequence_task, lambda t: GRUClassifier(t.x_train.shape[-1], t.n_classes)),
    "transformer": (token_task, lambda t: TinyTransformer(t.vocab, t.x_train.shape[1],
                                                          t.n_classes)),
}


def build(arch: str, seed: int) -> tuple[Task, nn.Module]:
    make_task, make_model = ARCHITECTURES[arch]
    task = make_task(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model(task)
    return task, model
