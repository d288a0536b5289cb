"""Detectors on the model's outputs for the probe at each snapshot (training-split samples):
confidence collapse, entropy drift, falling correct rate (label noise, forgetting), and a shift of
the per-sample loss distribution.

Each series is compared with the best value the run reached (:class:`RunningBest`), in units of
its own snapshot-to-snapshot movement. The probe is the same samples at every snapshot, so the
floor of that scale is the series' resolution (one sample's worth), not a sampling error.
"""

from __future__ import annotations

import math

import numpy as np

from sentrycam.backend.audit.alerts import Finding
from sentrycam.backend.audit.baselines import Escalation, Levels, RunningBest
from sentrycam.backend.audit.detectors.base import (EVIDENCE_POINTS, Detector, ProbeView,
                                                  SeriesWatch, finding)
from sentrycam.protocol.changes import ChangeKind

SNAPSHOT_LEVELS = Levels(develop=5.0, confirm=10.0, critical=40.0, persist=2)
#: Smallest noise scale of the tail log-loss: a 2% change.
TAIL_FLOOR = 0.02


#: Snapshot-to-snapshot movement is measured over the last few snapshots only, so that the
#: fast improvement of early training does not set the yardstick for later degradations.
SNAPSHOT_NOISE_WINDOW = 6
#: Observations (snapshots, epochs) that calibrate a series before it is judged.
SNAPSHOT_CALIBRATION = 4


def snapshot_watch(higher_is_better: bool) -> SeriesWatch:
    """The rule for a series sampled every snapshot or epoch: distance from its best value in
    units of its recent movement."""
    return SeriesWatch(RunningBest(higher_is_better, noise_window=SNAPSHOT_NOISE_WINDOW,
                                   min_count=SNAPSHOT_CALIBRATION), SNAPSHOT_LEVELS)


def train_rows(view: ProbeView) -> np.ndarray:
    """Boolean [N]: the probe samples of the training split."""
    return ~view.heldout


def has_left_chance(view: ProbeView) -> bool:
    """True once the model commits to predictions: mean confidence on the probe at least twice
    the chance level 1/K (for two classes, halfway to certainty). Before that, every output
    series sits at its chance value and its movement says nothing about the noise of a
    learning model (calibration waits)."""
    confidence = view.outputs.get("confidence")
    pred = view.outputs.get("pred")
    if confidence is None or pred is None or not len(pred):
        return False
    known = view.labels[view.labels >= 0]
    classes = len(np.unique(known)) if known.size else int(np.max(pred)) + 1
    chance = 1.0 / max(classes, 2)
    committed = min(2.0 * chance, (1.0 + chance) / 2.0)  # binary: halfway to certainty
    return float(np.nanmean(np.asarray(confidence, dtype=np.float64))) >= committed


class OutputSeries(Detector):
    """One summary of the probe outputs per snapshot, watched against its best so far."""

    kinds = frozenset({ChangeKind.SNAPSHOT})
    waiting_for = "no snapshot with model outputs yet (the model output must be [N, classes])"
    higher_is_better = True
    output = ""

    def __init__(self) -> None:
        super().__init__()
        self.watch = snapshot_watch(self.higher_is_better)
        self.learning = False

    def summarise(self, view: ProbeView) -> tuple[float, float] | None:
        """(value, its sampling standard error) or None when the snapshot lacks the input."""
        values = view.outputs.get(self.output)
        if values is None:
            return None
        values = np.asarray(values, dtype=np.float64)[train_rows(view)]
        values = values[np.isfinite(values)]
        if values.size < 10:
            return None
        return float(values.mean()), float(values.std() / math.sqrt(values.size))

    def observe(self, kind: str, item: ProbeView) -> list[Finding]:
        if not self.learning:
            self.learning = has_left_chance(item)
            if not self.learning:
                self.inactive_reason = "waiting for the model to leave chance level"
                return []
        summary = self.summarise(item)
        if summary is None:
            return []
        self.seen()
        value, error = summary
        self.watch.baseline.floor = max(self.watch.baseline.floor, error)
        level, score = self.watch.observe(item.step, value)
        return [self.judge(item, value, level, score)]

    def judge(self, view: ProbeView, value: float, level: int, score: float | None) -> Finding:
        raise NotImplementedError


class ConfidenceCollapse(OutputSeries):
    """Mean top-class probability over the probe falls well below the best the run reached."""

    name = "confidence_collapse"
    output = "confidence"

    def judge(self, view, value, level, score) -> Finding:
        return finding(
            self.name, view.step, level, score,
            evidence=self.watch.evidence(series="mean probe confidence"),
            message=f"mean confidence on the probe fell to {value:.3f} ({score or 0:.1f} noise "
                    f"units below the best, {self.watch.baseline.best:.3f})",
            suggestion="the model's discriminative representation is degrading (instability, "
                       "a data or task change); inspect the embedding view for mixing classes",
            confidence=0.5)


class EntropyDrift(OutputSeries):
    """Mean prediction entropy over the probe rises well above the lowest the run reached."""

    name = "entropy_drift"
    output = "entropy"
    higher_is_better = False

    def judge(self, view, value, level, score) -> Finding:
        return finding(
            self.name, view.step, level, score,
            evidence=self.watch.evidence(series="mean probe entropy (nats)"),
            message=f"mean prediction entropy on the probe rose to {value:.3f} nats "
                    f"({score or 0:.1f} noise units above the lowest, "
                    f"{self.watch.baseline.best:.3f})",
            suggestion="predictions are becoming uniform: label noise or out-of-distribution "
                       "data entering training, or a learning rate that destabilises the head",
            confidence=0.45)


class FallingCorrectRate(OutputSeries):
    """The fraction of training-split probe samples predicted correctly falls well below the
    best the run reached (label noise, forgetting after a task switch)."""

    name = "falling_correct_rate"
    waiting_for = "no snapshot with predictions and probe labels yet"

    def summarise(self, view: ProbeView) -> tuple[float, float] | None:
        pred = view.outputs.get("pred")
        rows = train_rows(view) & (view.labels >= 0)
        if pred is None or rows.sum() < 10:
            if pred is not None:
                self.inactive_reason = "no probe labels (pass labels with the probe)"
            return None
        correct = (np.asarray(pred)[rows] == view.labels[rows]).astype(np.float64)
        n, rate = int(rows.sum()), float(correct.mean())
        # The probe is the same samples every time, but which borderline samples land on the
        # right side moves from snapshot to snapshot like a binomial draw of the error rate:
        # a healthy demo run near 100% moved 1.3% (18 of 1,438 samples) between snapshots.
        # Floor: that standard error, and never less than one sample's worth.
        return rate, max(math.sqrt(rate * (1.0 - rate) / n), 1.0 / n)

    def judge(self, view, value, level, score) -> Finding:
        return finding(
            self.name, view.step, level, score,
            evidence=self.watch.evidence(series="probe correct rate (training split)"),
            message=f"correct rate on the probe fell to {value:.1%} "
                    f"(best {self.watch.baseline.best:.1%}; "
                    f"{score or 0:.1f} noise units)",
            suggestion="the model is un-learning what it knew: noisy labels in recent batches, a "
                       "task or data switch (forgetting), or an unstable step size",
            confidence=0.55)


class LossDistributionShift(OutputSeries):
    """The upper tail (mean of the worst tenth) of per-sample log-losses over the probe rises
    well above the lowest the run reached: some samples become much harder while the mean may
    hide it."""

    name = "loss_distribution_shift"
    waiting_for = "no snapshot with per-sample losses yet (they need probe labels)"
    higher_is_better = False
    QUANTILE = 0.9

    def summarise(self, view: ProbeView) -> tuple[float, float] | None:
        losses = view.outputs.get("loss")
        if losses is None:
            return None
        values = np.asarray(losses, dtype=np.float64)[train_rows(view)]
        values = np.log(np.clip(values[np.isfinite(values)], 1e-6, None))
        if values.size < 20:
            return None
        # The mean of the worst tenth (not a quantile, which jumps when the error rate
        # crosses it).
        tail = float(np.sort(values)[int(self.QUANTILE * values.size):].mean())
        return tail, TAIL_FLOOR

    def judge(self, view, value, level, score) -> Finding:
        return finding(
            self.name, view.step, level, score,
            evidence=self.watch.evidence(series="mean log-loss of the worst tenth of the probe"),
            message=f"the hardest tenth of probe samples got much harder (their geometric-mean "
                    f"loss {math.exp(value):.3g}, {score or 0:.1f} noise units above its lowest)",
            suggestion="the per-sample loss distribution shifted: a data-pipeline change, label "
                       "noise, or forgetting of some classes", confidence=0.45)


#: Levels of :class:`ClassLossRise`: its scale is a sampling error, not a measured movement, so
#: its levels sit higher than the other snapshot series' (on the tuning split's healthy CNN runs
#: one class rose 10-27 standard errors for one snapshot while the model traded classes off).
CLASS_LEVELS = Levels(develop=10.0, confirm=20.0, critical=80.0, persist=2)


class ClassLossRise(Detector):
    """The mean log-loss of one class of the probe's training-split samples rises well above
    the lowest that class reached. A failure that hits some classes (two classes' labels
    swapped, training on other classes only, a loader repeating one batch) raises their loss
    several-fold within one snapshot, while a summary over all classes dilutes the rise by the
    number of classes and needs a second snapshot to confirm it (after the validation curve
    shows it). The rise is in units of the standard error of the class's mean (at least
    :data:`CLASS_FLOOR`): the probe is the same samples every time, so that error bounds how
    much a class's mean moves when a few of its samples change sides.

    A healthy model, early on, trades classes off: one class's loss jumps while the mean over
    all classes falls. So a rise is confirmed at once only when the mean log-loss over the
    training-split probe did not fall since the previous snapshot; otherwise it has to hold
    for two snapshots."""

    name = "class_loss_rise"
    kinds = frozenset({ChangeKind.SNAPSHOT})
    waiting_for = "no snapshot with per-sample losses and probe labels yet"
    #: A class needs this many training-split probe samples to be watched.
    MIN_SAMPLES = 10
    #: Smallest scale of a class's mean log-loss: a 5% change.
    CLASS_FLOOR = 0.05

    def __init__(self) -> None:
        super().__init__()
        self.best: dict[int, float] = {}
        self.points: dict[int, list[tuple[int, float]]] = {}  # per class: its last snapshots
        self.escalation = Escalation(CLASS_LEVELS)
        self.learning = 0  # snapshots since the model left chance level
        self.overall = math.nan  # the previous snapshot's mean log-loss over every class

    def observe(self, kind: str, item: ProbeView) -> list[Finding]:
        losses = item.outputs.get("loss")
        if losses is None:
            return []
        if not self.learning and not has_left_chance(item):
            self.inactive_reason = "waiting for the model to leave chance level"
            return []
        self.learning += 1
        rows = train_rows(item) & (item.labels >= 0)
        logs = np.log(np.clip(np.asarray(losses, dtype=np.float64)[rows], 1e-6, None))
        overall, previous = float(np.nanmean(logs)) if logs.size else math.nan, self.overall
        self.overall = overall
        worst = self._worst_class(int(item.step), item.labels[rows], logs)
        if worst is None:
            return []
        self.seen()
        if self.learning <= SNAPSHOT_CALIBRATION:
            return []
        score, label, value = worst
        judged = score
        if overall < previous:  # the others improved more: a trade-off, confirmed only if held
            judged = min(score, CLASS_LEVELS.confirm - 1e-6)
        level = self.escalation.level(judged)
        return [finding(
            self.name, item.step, level, score,
            evidence={"series": f"mean log-loss of probe class {label}", "class": label,
                      "steps": [step for step, _ in self.points[label]],
                      "values": [v for _, v in self.points[label]], "best": self.best[label]},
            message=f"class {label}'s loss on the probe rose to {math.exp(value):.3g} "
                    f"(geometric mean; {score:.1f} standard errors above its lowest)",
            suggestion="some classes are being un-learned: their labels may be corrupted or "
                       "swapped, or training stopped showing them (a task switch, a loader "
                       "stuck on a few batches)", confidence=0.5)]

    def _worst_class(self, step: int, labels: np.ndarray, logs: np.ndarray
                     ) -> tuple[float, int, float] | None:
        """(score, class, mean log-loss) of the class whose mean log-loss (``logs`` float64 [n]
        of the samples with int ``labels`` [n]) rose most above its lowest, in standard errors;
        updates every class's lowest and evidence points. None without a watched class."""
        worst: tuple[float, int, float] | None = None
        for label in np.unique(labels):
            mine = logs[(labels == label) & np.isfinite(logs)]
            if mine.size < self.MIN_SAMPLES:
                continue
            value, label = float(mine.mean()), int(label)
            scale = max(self.CLASS_FLOOR, float(mine.std()) / math.sqrt(mine.size))
            score = (value - self.best.get(label, value)) / scale
            if worst is None or score > worst[0]:
                worst = (score, label, value)
            self.best[label] = min(self.best.get(label, value), value)
            points = self.points.setdefault(label, [])
            points[:] = [*points[1 - EVIDENCE_POINTS:], (step, value)]
        return worst
