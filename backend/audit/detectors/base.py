"""What every detector shares: the observation types, the base class and :class:`SeriesWatch`.

A detector consumes observations of the kinds it names (``ChangeKind`` members: scalars,
layer_stats, snapshot, embedding), keeps its own causal state, and returns a
:class:`~sentrycam.backend.audit.alerts.Finding` per judged observation. It reports through
:meth:`Detector.status` whether it is active and, if not, why (no labels, no validation metric,
no embeddings yet...).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from sentrycam.backend.audit.alerts import Finding
from sentrycam.backend.audit.baselines import Escalation, Levels, RobustWindow, RunningBest

EVIDENCE_POINTS = 40

#: Detector families (SPEC section 6), so that reports can say which kind of evidence fired
#: first: the geometry of the probe's representations, the training signals (loss, gradients,
#: updates, probe outputs, validation), and local per-layer statistics.
GEOMETRY, TRAINING_SIGNALS, LOCAL_STATISTICS = "geometry", "training_signals", "local_statistics"
FAMILIES = (GEOMETRY, TRAINING_SIGNALS, LOCAL_STATISTICS)


@dataclass(frozen=True)
class ProbeView:
    """One snapshot of the probe with its labels aligned.

    ``sample_ids`` int64 [N]; ``labels`` int64 [N] (-1 unknown); ``heldout`` bool [N];
    ``outputs`` name -> [N] (``pred`` int64, ``confidence``/``loss``/``entropy``/``margin``
    float32); ``features`` layer -> float16/float32 [N, D]; ``nonfinite``: layer -> NaN/Inf count.
    """

    step: int
    epoch: int
    sample_ids: np.ndarray
    labels: np.ndarray
    heldout: np.ndarray
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    nonfinite: Mapping[str, int] = field(default_factory=dict)

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any())


@dataclass(frozen=True)
class MapView:
    """The 2D map of one layer at one step: ``coords`` float32 [N, 2], ``labels`` int64 [N]."""

    step: int
    layer: str
    coords: np.ndarray
    labels: np.ndarray


class Detector:
    """Base class: ``name``, the ``kinds`` consumed, its ``family`` (one of :data:`FAMILIES`),
    :meth:`observe` and :meth:`status`."""

    name: ClassVar[str] = ""
    kinds: ClassVar[frozenset[str]] = frozenset()
    family: ClassVar[str] = TRAINING_SIGNALS
    #: Why the detector is quiet until its input arrives (shown while inactive).
    waiting_for: ClassVar[str] = "no input yet"

    def __init__(self) -> None:
        self.observations = 0
        self.inactive_reason: str | None = self.waiting_for

    def observe(self, kind: str, item: Any) -> list[Finding]:
        raise NotImplementedError

    @classmethod
    def alert_names(cls) -> frozenset[str]:
        """The ``detector`` names its alerts carry (its own name unless it reports several)."""
        return frozenset({cls.name})

    def status(self) -> dict[str, Any]:
        return {"detector": self.name, "active": self.inactive_reason is None,
                "reason": self.inactive_reason, "observations": self.observations}

    def seen(self) -> None:
        self.observations += 1
        self.inactive_reason = None


class SeriesWatch:
    """One monitored series: score each value against the baseline built from earlier values
    only, turn the score into a level with an :class:`Escalation`, then add the value to the
    baseline. ``direction`` +1 scores rises, -1 falls, 0 both (|z|). Keeps the last
    ``EVIDENCE_POINTS`` (step, value) pairs as evidence."""

    def __init__(self, baseline: RobustWindow | RunningBest, levels: Levels,
                 direction: float = 1.0) -> None:
        self.baseline, self.direction = baseline, direction
        self.escalation = Escalation(levels)
        self.points: deque[tuple[int, float]] = deque(maxlen=EVIDENCE_POINTS)
        self.last_score: float | None = None

    def observe(self, step: int, value: float) -> tuple[int, float | None]:
        score = self.score(value)
        level = self.escalation.level(score)
        if isinstance(self.baseline, RunningBest):
            self.baseline.update(value, anomalous=level >= 1)
        else:
            self.baseline.update(value)
        self.points.append((int(step), float(value)))
        self.last_score = score
        return level, score

    def record(self, step: int, value: float) -> None:
        """Take ``value`` into the baseline and the evidence without judging it (the caller
        decided it is normal); any escalation in progress ends."""
        self.escalation.level(None)
        self.baseline.update(value)
        self.points.append((int(step), float(value)))

    def score(self, value: float) -> float | None:
        if isinstance(self.baseline, RunningBest):
            return self.baseline.degradation(value)
        z = self.baseline.zscore(value)
        if z is None:
            return None
        return abs(z) if self.direction == 0 else self.direction * z

    def evidence(self, **extra: Any) -> dict[str, Any]:
        if isinstance(self.baseline, RunningBest):
            base = {"best": _num(self.baseline.best), "noise_scale": _num(self.baseline.scale())}
        else:
            center, scale = self.baseline.center_scale()
            base = {"baseline": _num(center), "scale": _num(scale)}
        return {"steps": [s for s, _ in self.points], "values": [_num(v) for _, v in self.points],
                **base, **extra}

    @property
    def duration_obs(self) -> int:
        return self.escalation.run


def _num(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def hypothesis(text: str, confidence: float) -> str:
    """A suggestion phrased as a hypothesis with its confidence (never an instruction)."""
    return f"Hypothesis (confidence {confidence:.2f}): {text}"


def finding(detector: str, step: int, level: int, score: float | None, *, layer: str | None = None,
            evidence: Mapping[str, Any] | None = None, message: str = "", suggestion: str = "",
            confidence: float = 0.5) -> Finding:
    """A Finding with the suggestion wrapped by :func:`hypothesis` when the level is >= 1."""
    if level <= 0:
        return Finding(detector=detector, step=step, level=0, layer=layer)
    return Finding(detector=detector, step=step, level=level, layer=layer,
                   magnitude=float(score) if score is not None else math.nan,
                   evidence=dict(evidence or {}), message=message,
                   suggestion=hypothesis(suggestion, confidence), confidence=confidence)
