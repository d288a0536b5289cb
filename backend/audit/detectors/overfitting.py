"""Held-out loss detectors.

Overfitting: the held-out loss rises above the lowest it reached while the training loss keeps
improving, so the generalisation gap widens beyond its own history.

Two sources, whichever the run provides: validation metrics logged with
``run.log(val_loss=...)`` (the training loss is averaged over the steps since the previous
validation point), and the probe's held-out split at each snapshot (its mean per-sample loss
against the training split's).

Validation divergence: the validation loss leaves the basin the run had found, many times its
lowest (whatever the training loss does: a model whose evaluation mode lags a fast optimiser,
batch norm's running statistics, can fail on held-out data while its batches still look fine).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from sentrycam.backend.audit.alerts import Finding
from sentrycam.backend.audit.detectors.base import (EVIDENCE_POINTS, Detector, ProbeView,
                                                     finding)
from sentrycam.backend.audit.detectors.outputs import snapshot_watch
from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.messages import Scalars
from sentrycam.protocol.signals import LOSS, VAL_LOSS

#: Consecutive held-out observations above the best one: 2 is developing, 3 confirmed.
DEVELOP_AFTER, CONFIRM_AFTER = 2, 3
#: Rises smaller than 5% of the best held-out loss are not counted (practical significance:
#: a converged model's held-out loss wanders by a few percent).
PRACTICAL = 0.05
#: Nor rises smaller than 0.01 nats (1% of the probability put on the right class): the healthy
#: demo at 2,000 steps moves between 0.002 and 0.01 for hundreds of steps, several times its
#: best, at 99.9% held-out accuracy.
PRACTICAL_NATS = 0.01
#: The validation loss at least this many times its lowest so far: developing, confirmed,
#: critical. On the tuning splits no healthy run passed 1.2x, and of the failure kinds only
#: instability ones (and a corrupted optimizer state) passed 7x; forgetting, label noise and
#: class switches reached 4-7x over their whole runs (docs/scenarios.md).
DIVERGENCE_FACTORS = (5.0, 10.0, 100.0)
#: ... and at least this many nats above it: a converged loss of 0.002 rising to 0.01 is
#: a wander (see PRACTICAL_NATS), not a divergence.
DIVERGENCE_NATS = 0.1


class GapTrack:
    """The held-out loss against its best, with the training loss and the gap at that best.

    Overfitting is declared the way the TEVID labelling protocol reads it (rising validation
    loss, falling training loss, a gap grown beyond its history), made causal and
    self-calibrating: the held-out loss has stayed above its best for several consecutive
    observations without falling back below where it first rose to, while the training loss
    is no worse than at the best and the gap is wider than it was then. The reported magnitude
    is the rise in units of the held-out loss's own recent movement. Once confirmed, the
    episode stays open (developing) until the held-out loss comes back to within 5% of its
    best: a plateau above the best that wiggles is one overfitting, not a new one at each
    rise.
    """

    def __init__(self) -> None:
        self.heldout = snapshot_watch(False)
        self.at_best: tuple[float, float] | None = None  # (train, gap) when heldout was best
        self.above = 0
        self.first_above = math.nan
        self.confirmed = False  # an episode was confirmed and the loss has not come back since

    def add(self, step: int, heldout: float, train: float) -> tuple[int, float | None, float]:
        gap = heldout - train
        score = self.heldout.score(heldout)
        best = self.heldout.baseline.best
        # Beyond its own recent movement, and by a practically significant fraction.
        held_above = heldout > max(best * (1 + PRACTICAL), best + PRACTICAL_NATS)
        worse = score is not None and score >= 1.0 and held_above
        if worse and self.at_best is not None:
            train_at_best, gap_at_best = self.at_best
            worse = train <= train_at_best * (1 + PRACTICAL) and gap > gap_at_best
        if worse and self.above:  # still rising overall since it first left its best
            worse = heldout >= self.first_above
        if worse and not self.above:
            self.first_above = heldout
        self.above = self.above + 1 if worse else 0
        level = 2 if self.above >= CONFIRM_AFTER else (1 if self.above >= DEVELOP_AFTER else 0)
        came_back = heldout <= best * (1 + PRACTICAL)  # the nats floor is for confirming
        self.confirmed = level == 2 or (self.confirmed and not came_back)
        if self.confirmed:
            level = max(level, 1)
        if not math.isfinite(best) or heldout <= best:
            self.at_best = (train, gap)
        self.heldout.baseline.update(heldout, anomalous=worse)
        self.heldout.points.append((step, heldout))
        return level, score, gap


class Overfitting(Detector):
    name = "overfitting"
    kinds = frozenset({ChangeKind.SCALARS, ChangeKind.SNAPSHOT})
    waiting_for = ("no validation metric (call run.log(val_loss=...)) and no held-out probe "
                   "split (pass heldout= to attach) yet")

    def __init__(self) -> None:
        super().__init__()
        self.val = GapTrack()
        self.probe = GapTrack()
        self._train_losses: list[float] = []

    def observe(self, kind: str, item: Scalars | ProbeView) -> list[Finding]:
        if kind == ChangeKind.SCALARS:
            return self._scalars(item)
        return self._snapshot(item)

    def _scalars(self, item: Scalars) -> list[Finding]:
        loss = item.values.get(LOSS.name)
        if loss is not None and math.isfinite(loss):
            self._train_losses.append(loss)
        val = item.values.get(VAL_LOSS.name)
        if val is None or not math.isfinite(val) or not self._train_losses:
            return []
        self.seen()
        train = float(np.mean(self._train_losses))
        self._train_losses = []
        level, score, gap = self.val.add(item.step, val, train)
        return [self._finding(item.step, level, score, gap, self.val, "validation loss",
                              VAL_LOSS.name)]

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
            message=(f"{what} has stayed above its lowest for {track.above} observations "
                     f"({score or 0:.1f} noise units now) while the training loss kept "
                     f"improving (gap now {gap:.3g})" if track.above >= DEVELOP_AFTER else
                     f"{what} has not come back to its lowest since overfitting was confirmed "
                     f"(gap now {gap:.3g})"),
            suggestion="the model is memorising the training set; more data or augmentation, "
                       "stronger regularisation (weight decay, dropout) or early stopping",
            confidence=0.6)


class ValidationDivergence(Detector):
    """The validation loss (``run.log(val_loss=...)``) many times the lowest this run reached:
    one observation is enough (validation points are few, and a jump of 10x is not noise)."""

    name = "validation_divergence"
    kinds = frozenset({ChangeKind.SCALARS})
    waiting_for = "no validation metric yet (call run.log(val_loss=...))"

    def __init__(self) -> None:
        super().__init__()
        self.best = math.inf
        self.points: deque[tuple[int, float]] = deque(maxlen=EVIDENCE_POINTS)

    def observe(self, kind: str, item: Scalars) -> list[Finding]:
        val = item.values.get(VAL_LOSS.name)
        if val is None:
            return []
        self.seen()
        best = self.best
        if math.isfinite(val):
            self.best = min(best, val)
        self.points.append((item.step, val))
        if not math.isfinite(best):
            return []
        factor = val / best if best > 0 and math.isfinite(val) else math.inf
        far_enough = not math.isfinite(val) or val - best >= DIVERGENCE_NATS  # NaN: above
        level = sum(factor >= f for f in DIVERGENCE_FACTORS) if far_enough else 0
        return [finding(
            self.name, item.step, level, factor, layer=None,
            evidence={"steps": [s for s, _ in self.points],
                      "values": [v if math.isfinite(v) else None for _, v in self.points],
                      "series": "validation loss", "best": best,
                      "factor": round(factor, 1) if math.isfinite(factor) else None},
            message=(f"validation loss {val:.4g} is {factor:.0f}x" if math.isfinite(factor)
                     else f"validation loss is {val}, far above") + f" the lowest this run "
                    f"reached ({best:.4g})",
            suggestion="the step is too large for this phase of training (or evaluation mode "
                       "lags training: batch norm's running statistics); lower the learning "
                       "rate, add warm-up or clip gradients", confidence=0.6)]
