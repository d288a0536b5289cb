"""Training-loss detectors: divergence, outlier batches (spikes), oscillation, stagnation, NaN/Inf.

All work on log(loss) of the training batches (``Scalars.values["loss"]``), so that the same
rule reads a loss of 2.3 and one of 0.01 in the run's own relative terms.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from sentrycam.backend.audit.alerts import Finding
from sentrycam.backend.audit.baselines import (MAD_TO_SD, Escalation, Levels, finite_log,
                                               robust_center_scale)
from sentrycam.backend.audit.detectors.base import Detector, finding
from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.messages import LayerStats, Scalars
from sentrycam.protocol.signals import GRAD_NORM, LOSS, NONFINITE, NONFINITE_GRAD

SMOOTH = 5          # causal median over the last 5 losses
WARMUP = 80         # losses before any judgement (early training moves fast)
NOISE_WINDOW = 100  # losses the per-step noise is measured over
RECENT_NOISE = 25   # ... and over the most recent of them


def finite_loss(detector: Detector, item: Scalars) -> float | None:
    """The step's training loss when it is finite (the detector then counts as fed), else None:
    non-finite losses belong to the NaN/Inf detector, not to the baselines."""
    loss = item.values.get(LOSS.name)
    if loss is None or not math.isfinite(loss):
        return None
    detector.seen()
    return loss


class LossTrack:
    """Causal views of the loss: raw log-loss, trailing median, per-step noise, best level."""

    def __init__(self) -> None:
        self.raw: deque[float] = deque(maxlen=NOISE_WINDOW)
        self.residuals: deque[float] = deque(maxlen=NOISE_WINDOW)
        self.smooth_hist: deque[tuple[int, float]] = deque(maxlen=400)
        self.best = math.inf
        self.count = 0

    def add(self, step: int, loss: float) -> float | None:
        x = finite_log(loss)
        if math.isnan(x):
            return None
        if len(self.raw) >= SMOOTH:  # x against the median of the SMOOTH losses before it
            self.residuals.append(x - self.smooth_hist[-1][1])
        self.raw.append(x)
        self.count += 1
        smooth = float(np.median(list(self.raw)[-SMOOTH:]))
        self.smooth_hist.append((step, smooth))
        return smooth

    def noise(self) -> float:
        """Robust per-step spread of log-loss around its trailing median (>= 1e-3): the larger
        of its value over the last 100 and the last 25 steps, so that a quiet phase (a loss
        stuck at chance at the start) does not set the yardstick once the loss moves."""
        if len(self.residuals) < 2:
            return math.nan
        _, scale = robust_center_scale(self.residuals, 1e-3)
        _, recent = robust_center_scale(list(self.residuals)[-RECENT_NOISE:], 1e-3)
        return max(scale, recent)

    def evidence(self, **extra: Any) -> dict[str, Any]:
        points = list(self.smooth_hist)[-40:]
        return {"steps": [s for s, _ in points],
                "values": [round(math.exp(v), 6) for _, v in points],
                "series": "loss (trailing median of 5)", **extra}


class LossDivergence(Detector):
    """The smoothed loss rises above the best level it reached, by many per-step noise units."""

    name = "loss_divergence"
    kinds = frozenset({ChangeKind.SCALARS})
    waiting_for = "no training loss yet (hook a criterion or call run.log(loss=...))"

    def __init__(self) -> None:
        super().__init__()
        self.track = LossTrack()
        self.escalation = Escalation(Levels(develop=4.0, confirm=8.0, critical=25.0, persist=10))

    def observe(self, kind: str, item: Scalars) -> list[Finding]:
        loss = finite_loss(self, item)
        if loss is None:
            return []
        smooth = self.track.add(item.step, loss)
        if self.track.count <= WARMUP or smooth is None:
            self.track.best = min(self.track.best, smooth if smooth is not None else math.inf)
            return []
        noise = self.track.noise()
        score = (smooth - self.track.best) / noise
        level = self.escalation.level(score)
        self.track.best = min(self.track.best, smooth)
        return [finding(
            self.name, item.step, level, score,
            evidence=self.track.evidence(best_loss=round(math.exp(self.track.best), 6),
                                         noise_log=round(noise, 4)),
            message=f"training loss {math.exp(smooth):.4g} is {score:.1f} noise units above the "
                    f"best level this run reached ({math.exp(self.track.best):.4g})",
            suggestion="the learning rate is too high for this phase of training (or the data "
                       "changed); lower it, or check recent batches", confidence=0.6)]


class OutlierBatch(Detector):
    """Single-batch loss spikes; ``CONFIRM_SPIKES`` within 100 steps are confirmed instability
    (a self-calibrating take on the repeated-spike rule of the TEVID labelling protocol)."""

    name = "outlier_batch"
    kinds = frozenset({ChangeKind.SCALARS})
    waiting_for = LossDivergence.waiting_for
    SPIKE_Z = 6.0
    WINDOW = 100
    #: Minibatch losses are heavy-tailed: healthy runs show two or three 6-sigma batches per
    #: hundred steps; five is a pattern.
    CONFIRM_SPIKES = 5

    def __init__(self) -> None:
        super().__init__()
        self.track = LossTrack()
        self.spikes: deque[int] = deque()

    def observe(self, kind: str, item: Scalars) -> list[Finding]:
        loss = finite_loss(self, item)
        if loss is None:
            return []
        previous = self.track.smooth_hist[-1][1] if self.track.smooth_hist else math.nan
        noise = self.track.noise()
        x = finite_log(loss)
        self.track.add(item.step, loss)
        if self.track.count <= WARMUP or math.isnan(noise) or math.isnan(previous):
            return []
        z = (x - previous) / noise
        while self.spikes and self.spikes[0] <= item.step - self.WINDOW:
            self.spikes.popleft()
        if z < self.SPIKE_Z:
            return [finding(self.name, item.step, 0, z)]
        self.spikes.append(item.step)
        level = 2 if len(self.spikes) >= self.CONFIRM_SPIKES else 1
        return [finding(
            self.name, item.step, level, z,
            evidence=self.track.evidence(spike_steps=list(self.spikes), noise_log=round(noise, 4)),
            message=f"batch loss {loss:.4g} at step {item.step} is {z:.1f} noise units above the "
                    f"trailing level ({len(self.spikes)} spike(s) in the last {self.WINDOW} steps)",
            suggestion="some batches carry corrupt or mislabeled samples, or the step size is "
                       "at the edge of stability", confidence=0.4 if level == 1 else 0.55)]


class Oscillation(Detector):
    """The loss bounces (strongly negative lag-1 autocorrelation around its trailing median) with
    an amplitude well above its earlier amplitude, and makes no net progress."""

    name = "oscillation"
    kinds = frozenset({ChangeKind.SCALARS})
    waiting_for = LossDivergence.waiting_for
    WINDOW = 20

    def __init__(self) -> None:
        super().__init__()
        self.track = LossTrack()
        self.amplitudes: deque[float] = deque(maxlen=200)
        self.escalation = Escalation(Levels(develop=4.0, confirm=1e9, persist=10, max_level=2))

    def observe(self, kind: str, item: Scalars) -> list[Finding]:
        loss = finite_loss(self, item)
        if loss is None:
            return []
        self.track.add(item.step, loss)
        raw = np.asarray(self.track.raw)[-self.WINDOW:]
        if self.track.count <= WARMUP or raw.size < self.WINDOW:
            return []
        detrended = raw - np.median(raw)
        diffs = np.diff(raw)
        amplitude = MAD_TO_SD * float(np.median(np.abs(diffs)))
        reference = list(self.amplitudes)[:-self.WINDOW]
        self.amplitudes.append(amplitude)
        if len(reference) < 20:
            return []
        center, scale = robust_center_scale(reference, 1e-3)
        z = (amplitude - center) / max(scale, 0.05 * center)
        a, b = detrended[:-1], detrended[1:]
        denom = math.sqrt(float((a * a).sum() * (b * b).sum())) or math.inf
        autocorr = float((a * b).sum()) / denom
        net = abs(raw[-1] - raw[0])
        bouncing = autocorr < -0.4 and net < amplitude
        level = self.escalation.level(z if bouncing else None)
        return [finding(
            self.name, item.step, level, z,
            evidence=self.track.evidence(autocorr=round(autocorr, 3),
                                         amplitude_log=round(amplitude, 4)),
            message=f"loss alternates up and down (lag-1 autocorrelation {autocorr:.2f}) with an "
                    f"amplitude {z:.1f} scales above its earlier amplitude, without net progress",
            suggestion="the step size overshoots the local minimum; lower the learning rate or "
                       "raise momentum damping", confidence=0.55)]


class Stagnation(Detector):
    """No progress: the smoothed loss has not improved by more than its own noise over the last
    ``WINDOW`` steps while it is still far above the best fraction of the start it reached.
    Capped at severity 1: a plateau is also what convergence looks like."""

    name = "stagnation"
    kinds = frozenset({ChangeKind.SCALARS})
    waiting_for = LossDivergence.waiting_for
    WINDOW = 150

    def __init__(self) -> None:
        super().__init__()
        self.track = LossTrack()
        self.start = math.nan
        self.escalation = Escalation(Levels(develop=0.5, confirm=1e9, persist=1, max_level=1))

    def observe(self, kind: str, item: Scalars) -> list[Finding]:
        loss = finite_loss(self, item)
        if loss is None:
            return []
        smooth = self.track.add(item.step, loss)
        if self.track.count == SMOOTH:
            self.start = smooth
        history = list(self.track.smooth_hist)
        past = [v for s, v in history if s <= item.step - self.WINDOW]
        if smooth is None or not past or math.isnan(self.start):
            return []
        progress = past[-1] - smooth
        noise = self.track.noise()
        learned = self.start - smooth  # log units gained since the start
        stuck = progress < noise and learned < 0.5 * abs(self.start) + noise
        level = self.escalation.level(1.0 if stuck else None)
        return [finding(
            self.name, item.step, level, progress / noise if noise else None,
            evidence=self.track.evidence(window=self.WINDOW),
            message=f"training loss has not improved over the last {self.WINDOW} steps "
                    f"(change {progress:+.3g} in log units, noise {noise:.3g})",
            suggestion="the model is stuck on a plateau: the learning rate may be too low, "
                       "gradients may be vanishing, or capacity is exhausted", confidence=0.4)]


class NonFinite(Detector):
    """NaN/Inf anywhere: in the loss, the gradients, a layer's statistics or a snapshot."""

    name = "nonfinite"
    kinds = frozenset({ChangeKind.SCALARS, ChangeKind.LAYER_STATS, ChangeKind.SNAPSHOT})
    waiting_for = "no training data yet"

    def observe(self, kind: str, item: Any) -> list[Finding]:
        self.seen()
        where: dict[str | None, str] = {}
        if kind == ChangeKind.SCALARS:
            for name in (LOSS.name, GRAD_NORM.name):
                value = item.values.get(name)
                if value is not None and not math.isfinite(value):
                    where[None] = f"{name} is {value}"
            if item.values.get(NONFINITE_GRAD.name):
                where[None] = "gradients contain NaN/Inf"
        elif (kind == ChangeKind.LAYER_STATS and isinstance(item, LayerStats)
              and NONFINITE.name in item.stats):
            column = item.values[:, item.stats.index(NONFINITE.name)]
            for layer, count in zip(item.layers, column):
                if count > 0:
                    where[layer] = f"{int(count)} NaN/Inf activation values"
        elif kind == ChangeKind.SNAPSHOT:
            for layer, count in getattr(item, "nonfinite", {}).items():
                if count:
                    where[layer] = f"{int(count)} NaN/Inf probe feature values"
        if not where:
            return [finding(self.name, item.step, 0, None)]
        return [finding(self.name, item.step, 3, math.inf, layer=layer,
                        evidence={"what": what, "source": kind},
                        message=f"non-finite values at step {item.step}: {what}",
                        suggestion="a numerical overflow (learning rate far too high, a log or "
                                   "division of zero, or fp16 overflow); roll back to the last "
                                   "finite checkpoint", confidence=0.8)
                for layer, what in where.items()]
