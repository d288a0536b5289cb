"""Overfitting: the held-out loss rises above the lowest it reached while the training loss keeps
improving, so the generalisation gap widens beyond its own history.

Two sources, whichever the run provides: validation metrics logged with
``run.log(val_loss=...)`` (the training loss is averaged over the steps since the previous
validation point), and the probe's held-out split at each snapshot (its mean per-sample loss
against the training split's).
"""

from __future__ import annotations

import math

import numpy as np

from sentrycam.backend.audit.alerts import Finding
from sentrycam.backend.audit.baselines import Levels, RunningBest
from sentrycam.backend.audit.detectors.base import Detector, ProbeView, SeriesWatch, finding
from sentrycam.capture.messages import Scalars

LEVELS = Levels(develop=3.0, confirm=8.0, critical=40.0, persist=3)


class GapTrack:
    """Held-out loss against its best, and the train/held-out gap against its smallest."""

    def __init__(self) -> None:
        self.heldout = SeriesWatch(RunningBest(False, noise_window=20, min_count=3), LEVELS)
        self.gap = RunningBest(False, noise_window=20, min_count=3)
        self.train_best = math.inf

    def add(self, step: int, heldout: float, train: float) -> tuple[int, float | None, float]:
        gap = heldout - train
        gap_score = self.gap.degradation(gap)
        score = self.heldout.score(heldout)
        train_improving = train <= self.train_best + 1e-12 or \
            (math.isfinite(self.train_best) and train < self.train_best * 1.05)
        widening = gap_score is not None and gap_score > LEVELS.develop
        judged = score if (train_improving and widening) else None
        level = self.heldout.escalation.level(judged)
        self.heldout.baseline.update(heldout)
        self.heldout.points.append((step, heldout))
        self.gap.update(gap)
        self.train_best = min(self.train_best, train)
        return level, judged, gap


class Overfitting(Detector):
    name = "overfitting"
    kinds = frozenset({"scalars", "snapshot"})
    waiting_for = ("no validation metric (call run.log(val_loss=...)) and no held-out probe "
                   "split (pass heldout= to attach) yet")

    def __init__(self) -> None:
        super().__init__()
        self.val = GapTrack()
        self.probe = GapTrack()
        self._train_losses: list[float] = []

    def observe(self, kind: str, item: Scalars | ProbeView) -> list[Finding]:
        if kind == "scalars":
            return self._scalars(item)
        return self._snapshot(item)

    def _scalars(self, item: Scalars) -> list[Finding]:
        loss = item.values.get("loss")
        if loss is not None and math.isfinite(loss):
            self._train_losses.append(loss)
        val = item.values.get("val_loss")
        if val is None or not math.isfinite(val) or not self._train_losses:
            return []
        self.seen()
        train = float(np.mean(self._train_losses))
        self._train_losses = []
        level, score, gap = self.val.add(item.step, val, train)
        return [self._finding(item.step, level, score, gap, self.val, "validation loss",
                              "val_loss")]

    def _snapshot(self, view: ProbeView) -> list[Finding]:
        losses = view.outputs.get("loss")
        if losses is None or not view.heldout.any() or view.heldout.all():
            return []
        losses = np.asarray(losses, dtype=np.float64)
        held, train = losses[view.heldout], losses[~view.heldout]
        held, train = held[np.isfinite(held)], train[np.isfinite(train)]
        if held.size < 10 or train.size < 10:
            return []
        self.seen()
        level, score, gap = self.probe.add(view.step, float(held.mean()), float(train.mean()))
        return [self._finding(view.step, level, score, gap, self.probe,
                              "held-out probe loss", "heldout_probe")]

    def _finding(self, step: int, level: int, score: float | None, gap: float, track: GapTrack,
                 what: str, source: str) -> Finding:
        return finding(
            self.name, step, level, score, layer=None,
            evidence=track.heldout.evidence(series=what, source=source, gap=round(gap, 5)),
            message=f"{what} rose {score or 0:.1f} noise units above its lowest while the "
                    f"training loss kept improving (gap now {gap:.3g})",
            suggestion="the model is memorising the training set; more data or augmentation, "
                       "stronger regularisation (weight decay, dropout) or early stopping",
            confidence=0.6)
