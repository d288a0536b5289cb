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
from sentrycam.backend.audit.detectors.base import Detector, ProbeView, finding
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


class GapTrack:
    """The held-out loss against its best, with the training loss and the gap at that best.

    Overfitting is declared the way the TEVID labelling protocol reads it (rising validation
    loss, falling training loss, a gap grown beyond its history), made causal and
    self-calibrating: the held-out loss has stayed above its best for several consecutive
    observations without falling back below where it first rose to, while the training loss
    is no worse than at the best and the gap is wider than it was then. The reported magnitude
    is the rise in units of the held-out loss's own recent movement.
    """

    def __init__(self) -> None:
        self.heldout = snapshot_watch(False)
        self.at_best: tuple[float, float] | None = None  # (train, gap) when heldout was best
        self.above = 0
        self.first_above = math.nan

    def add(self, step: int, heldout: float, train: float) -> tuple[int, float | None, float]:
        gap = heldout - train
        score = self.heldout.score(heldout)
        best = self.heldout.baseline.best
        # Beyond its own recent movement, and by a practically significant fraction.
        worse = (score is not None and score >= 1.0
                 and heldout > max(best * (1 + PRACTICAL), best + PRACTICAL_NATS))
        if worse and self.at_best is not None:
            train_at_best, gap_at_best = self.at_best
            worse = train <= train_at_best * (1 + PRACTICAL) and gap > gap_at_best
        if worse and self.above:  # still rising overall since it first left its best
            worse = heldout >= self.first_above
        if worse and not self.above:
            self.first_above = heldout
        self.above = self.above + 1 if worse else 0
        level = 2 if self.above >= CONFIRM_AFTER else (1 if self.above >= DEVELOP_AFTER else 0)
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
            message=f"{what} has stayed above its lowest for {track.above} observations "
                    f"({score or 0:.1f} noise units now) while the training loss kept improving "
                    f"(gap now {gap:.3g})",
            suggestion="the model is memorising the training set; more data or augmentation, "
                       "stronger regularisation (weight decay, dropout) or early stopping",
            confidence=0.6)
