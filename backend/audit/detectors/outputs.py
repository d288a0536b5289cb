"""Detectors on the model's outputs for the probe at each snapshot (training-split samples):
confidence collapse, entropy drift, falling correct rate (label noise, forgetting), and a shift of
the per-sample loss distribution.

Each series is compared with the best value the run reached (:class:`RunningBest`), in units of
its own snapshot-to-snapshot movement, floored by its sampling error over the probe.
"""

from __future__ import annotations

import math

import numpy as np

from sentrycam.backend.audit.alerts import Finding
from sentrycam.backend.audit.baselines import Levels, RunningBest
from sentrycam.backend.audit.detectors.base import Detector, ProbeView, SeriesWatch, finding

SNAPSHOT_LEVELS = Levels(develop=5.0, confirm=10.0, critical=40.0, persist=2)


#: Snapshot-to-snapshot movement is measured over the last few snapshots only, so that the
#: fast improvement of early training does not set the yardstick for later degradations.
SNAPSHOT_NOISE_WINDOW = 6


def snapshot_watch(higher_is_better: bool) -> SeriesWatch:
    """The rule for a series sampled every snapshot or epoch: distance from its best value in
    units of its recent movement (also the benchmark's validation-loss trigger)."""
    return SeriesWatch(RunningBest(higher_is_better, noise_window=SNAPSHOT_NOISE_WINDOW,
                                   min_count=3), SNAPSHOT_LEVELS)


def train_rows(view: ProbeView) -> np.ndarray:
    """Boolean [N]: the probe samples of the training split."""
    return ~view.heldout


class OutputSeries(Detector):
    """One summary of the probe outputs per snapshot, watched against its best so far."""

    kinds = frozenset({"snapshot"})
    waiting_for = "no snapshot with model outputs yet (the model output must be [N, classes])"
    higher_is_better = True
    output = ""

    def __init__(self) -> None:
        super().__init__()
        self.watch = snapshot_watch(self.higher_is_better)

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
            message=f"mean prediction entropy on the probe rose to {value:.3f} nats ({score or 0:.1f} "
                    f"noise units above the lowest, {self.watch.baseline.best:.3f})",
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
        p = float(correct.mean())
        best = self.watch.baseline.best
        q = best if math.isfinite(best) else p
        return p, math.sqrt(max(q * (1 - q), 1.0 / rows.sum()) / rows.sum())

    def judge(self, view, value, level, score) -> Finding:
        return finding(
            self.name, view.step, level, score,
            evidence=self.watch.evidence(series="probe correct rate (training split)"),
            message=f"correct rate on the probe fell to {value:.1%} (best {self.watch.baseline.best:.1%}; "
                    f"{score or 0:.1f} noise units)",
            suggestion="the model is un-learning what it knew: noisy labels in recent batches, a "
                       "task or data switch (forgetting), or an unstable step size",
            confidence=0.55)


class LossDistributionShift(OutputSeries):
    """The upper tail (90th percentile) of per-sample log-losses over the probe rises well above
    the lowest the run reached: some samples become much harder while the mean may hide it."""

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
        tail = float(np.quantile(values, self.QUANTILE))
        return tail, float(values.std() * 2.0 / math.sqrt(values.size))

    def judge(self, view, value, level, score) -> Finding:
        return finding(
            self.name, view.step, level, score,
            evidence=self.watch.evidence(series="90th percentile of per-sample log-loss"),
            message=f"the hardest tenth of probe samples got much harder (90th-percentile loss "
                    f"{math.exp(value):.3g}, {score or 0:.1f} noise units above its lowest)",
            suggestion="the per-sample loss distribution shifted: a data-pipeline change, label "
                       "noise, or forgetting of some classes", confidence=0.45)
