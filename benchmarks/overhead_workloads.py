"""The models and data that ``capture_overhead.py`` times, and the row format of its results.

Four workloads, all offline and seeded: the demo CNN and a tiny MLP on sklearn digits (8x8), a
ResNet-style CNN on digits scaled up to 3x32x32, and a small transformer encoder on synthetic
token sequences. :class:`OverheadRow` is one line of the results table; other overhead
benchmarks (framework callbacks, say) build the same rows so one table holds them all.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sentrycam.capture import demo, launcher


@dataclass(frozen=True)
class OverheadRow:
    """One model and setting: the plain step time (ms) and the watched training's ratios over
    plain training (mean: whole-round wall time; median, tail: step times), what the agent
    measured and what the server stored (None where nothing was watched)."""

    model: str
    setting: str
    median_ms: float
    p95_ms: float
    mean_ratio: float
    p50_ratio: float
    p95_ratio: float
    p99_ratio: float
    max_ratio: float
    overhead: float = 0.0
    budget: float | None = None
    dropped: int = 0
    snapshots: int | None = None
    telemetry_share: float | None = None
    round_steps: int | None = None  # steps per round, where rounds have a fixed length
    #: standard error of the mean ratio: of the per-cycle ratios (watched round over its
    #: cycle's plain rounds), where there are at least two cycles
    mean_ratio_se: float | None = None
    #: where the local server ran: "own core" (pinned apart from training) or "shared"
    placement: str = "shared"

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        stored = ("" if self.snapshots is None else f"  snapshots {self.snapshots}  telemetry "
                  f"on {self.telemetry_share:.0%} of steps")
        steps = "" if self.round_steps is None else f"  {self.round_steps} steps/round"
        se = "" if self.mean_ratio_se is None else f" +- {self.mean_ratio_se:.4f}"
        return (f"{self.model + ' ' + self.setting:<30} server {self.placement:<8} plain "
                f"{self.median_ms:7.3f} ms  mean {self.mean_ratio:.4f}{se}  median "
                f"{self.p50_ratio:.4f}  p95/p99/max {self.p95_ratio:.3f}/{self.p99_ratio:.3f}/{self.max_ratio:.3f}  agent "
                f"{self.overhead:.4f}  dropped {self.dropped}{stored}{steps}")


@dataclass(frozen=True)
class Workload:
    """A model builder (seeded, global RNG untouched), train tensors x [N, ...] / y int64 [N],
    and the batch size."""

    name: str
    build: Callable[[int], nn.Module]
    x: torch.Tensor
    y: torch.Tensor
    batch_size: int = 64


class ResNetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """ResNet-style: stem, three stages of one block (16, 32, 64 channels), pool, linear.
    Input float32 [B, 3, 32, 32]; logits [B, 10]."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.stages = nn.Sequential(ResNetBlock(16, 16, 1), ResNetBlock(16, 32, 2),
                                    ResNetBlock(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1))


class SmallTransformer(nn.Module):
    """Token embedding + learned positions, two encoder layers (d 64, 4 heads), mean pool,
    linear. Input int64 [B, T] tokens; logits [B, n_classes]."""

    def __init__(self, vocab: int = 32, length: int = 16, n_classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 64)
        self.position = nn.Parameter(torch.zeros(1, length, 64))
        layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(64, n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens) + self.position).mean(1))


def _seeded(factory: Callable[[], nn.Module]) -> Callable[[int], nn.Module]:
    def build(seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return factory()
    return build


def _tokens(n: int = 1500, length: int = 16, vocab: int = 32, n_classes: int = 4,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens; the class is which quarter of the vocabulary is most frequent."""
    tokens = np.random.default_rng(seed).integers(0, vocab, (n, length))
    counts = np.stack([(tokens // (vocab // n_classes) == c).sum(1) for c in range(n_classes)], 1)
    return torch.from_numpy(tokens), torch.from_numpy(counts.argmax(1).astype(np.int64))


def workloads(names: tuple[str, ...] = ("cnn", "mlp", "resnet32", "transformer")
              ) -> list[Workload]:
    """The named workloads (digits split with seed 0)."""
    digits = demo.load_digits_data(seed=0)
    made = {
        "cnn": lambda: Workload("cnn", lambda s: demo.build_model("cnn", s), digits.x_train,
                                digits.y_train),
        "mlp": lambda: Workload("mlp", lambda s: demo.build_model("mlp", s), digits.x_train,
                                digits.y_train),
        "resnet32": lambda: Workload(
            "resnet32", _seeded(SmallResNet),
            F.interpolate(digits.x_train, size=32, mode="bilinear").expand(-1, 3, -1, -1)
            .contiguous(), digits.y_train),
        "transformer": lambda: Workload("transformer", _seeded(SmallTransformer), *_tokens()),
    }
    return [made[name]() for name in names]


@contextmanager
def local_server(name: str, cores: set[int] | None = None) -> Iterator[Path]:
    """A local sentrycam server on a fresh database in a temporary folder, for the benchmark
    ``name``; yields the database's path (what ``attach(db=...)`` and the launcher take).
    ``cores``: the CPUs the server and the processes it spawns run on (Linux; they inherit this
    process's affinity at their start), None for all."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / f"{name}.duckdb"
        if cores is None:
            launcher.ensure_local_server(db)
        else:
            mine = os.sched_getaffinity(0)
            os.sched_setaffinity(0, cores)
            try:
                launcher.ensure_local_server(db)
            finally:
                os.sched_setaffinity(0, mine)
        try:
            yield db
        finally:
            launcher.stop_local_server(db)
