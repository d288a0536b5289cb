"""Constructed, seeded training streams for the detector tests, and a helper that feeds them."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from sentrycam.backend.audit.detectors import Detector, ProbeView
from sentrycam.protocol.messages import LayerStats, Scalars

RUN = "run-under-test"


#: Series sent on some steps only: a NaN entry of theirs means "not sent at that step".
SPARSE = ("val_loss", "grad_norm_clipped")


def scalars(steps: int, **series: np.ndarray) -> list[Scalars]:
    """One Scalars per step with each named series' value at that step (NaN entries of the
    :data:`SPARSE` series skipped; other NaNs are sent, as a non-finite value would be)."""
    out = []
    for step in range(steps):
        values = {name: float(v[step]) for name, v in series.items()
                  if not (name in SPARSE and np.isnan(v[step]))}
        out.append(Scalars(run_id=RUN, step=step, wall_time=float(step), values=values))
    return out


def healthy_loss(steps: int = 400, seed: int = 0, noise: float = 0.15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    return (0.1 + 2.2 * np.exp(-t / 80)) * np.exp(rng.normal(scale=noise, size=steps))


def lognormal(steps: int, level: float, seed: int, noise: float = 0.2) -> np.ndarray:
    return level * np.exp(np.random.default_rng(seed).normal(scale=noise, size=steps))


def layer_stats(step: int, stat: str, values: dict[str, float]) -> LayerStats:
    layers = tuple(values)
    return LayerStats(run_id=RUN, step=step, layers=layers, stats=(stat,),
                      values=np.array([[values[l]] for l in layers], dtype=np.float32))


def probe_view(step: int, labels: np.ndarray, outputs: dict[str, np.ndarray] | None = None,
               features: dict[str, np.ndarray] | None = None,
               heldout: np.ndarray | None = None) -> ProbeView:
    n = len(labels)
    return ProbeView(step=step, epoch=0, sample_ids=np.arange(n, dtype=np.int64),
                     labels=labels.astype(np.int64),
                     heldout=np.zeros(n, bool) if heldout is None else heldout,
                     outputs=outputs or {}, features=features or {})


def levels(detector: Detector, kind: str, items: Iterable[Any],
           layer: str | None = None) -> dict[int, int]:
    """{step: highest level of the detector's findings at that step} (one layer if given)."""
    out: dict[int, int] = {}
    for item in items:
        for f in detector.observe(kind, item):
            if layer is None or f.layer == layer:
                out[f.step] = max(out.get(f.step, 0), f.level)
    return out


def first_confirmed(by_step: dict[int, int]) -> int | None:
    steps = [s for s, lv in sorted(by_step.items()) if lv >= 2]
    return steps[0] if steps else None


def max_level(by_step: dict[int, int]) -> int:
    return max(by_step.values(), default=0)
