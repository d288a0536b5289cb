"""Gradient and update detectors: explosion (sudden or a slow drift), vanishing gradients,
stalled updates, optimizer-state corruption, and weight-norm drift.

Scalars read: ``grad_norm`` (global gradient norm; ``grad_norm_clipped`` the norm after clipping
on clipped steps), ``update_ratio`` (|update| / |weights|) and ``lr`` from the capture
telemetry; per-layer ``weight_norm`` from parameter-layer LayerStats.
All series are taken in log space, so their baselines are scale-free.
"""

from __future__ import annotations

import math
from collections import deque
from typing import ClassVar

import numpy as np

from sentrycam.backend.audit.alerts import Finding
from sentrycam.backend.audit.baselines import (Cusum, Escalation, LearningPace, Levels,
                                               RobustWindow, finite_log)
from sentrycam.backend.audit.detectors.base import (LOCAL_STATISTICS, Detector, SeriesWatch,
                                                    finding)
from sentrycam.protocol.messages import LayerStats, Scalars
from sentrycam.protocol.signals import (GRAD_NORM, GRAD_NORM_CLIPPED, LOSS, LR, UPDATE_RATIO,
                                        WEIGHT_NORM)
from sentrycam.protocol.changes import ChangeKind

#: Smallest scale of a log-series baseline: 5% relative change.
LOG_FLOOR = 0.05
#: Smallest scale of the update-size baseline: schedules move the step size by design (a step
#: decay of 0.3x is a fall of 1.2 in log), so only a fall of two orders of magnitude confirms.
UPDATE_FLOOR = 0.25


#: Per-step series calibrate on this many observations before any judgement: early training
#: moves every statistic fast, and a decision needs a baseline of the run's own normal.
CALIBRATION = 80


def fast_window() -> RobustWindow:
    """Trailing 100 observations, 5 back: the run's recent normal."""
    return RobustWindow(window=100, lag=5, min_count=CALIBRATION, floor=LOG_FLOOR)


class GradientExplosion(Detector):
    """Gradient norm far above its trailing baseline (sudden), or drifting above a slow baseline
    (a CUSUM of z-scores against the median of 100 observations that ended 50 back). While the
    loss falls fast (:class:`LearningPace`: the model taking off, e.g. as a warm-up or one-cycle
    schedule reaches its peak) a rise is held at developing: growing gradients are then how
    learning looks."""

    name = "gradient_explosion"
    kinds = frozenset({ChangeKind.SCALARS})
    waiting_for = "no gradient norm yet (capture telemetry sends grad_norm at telemetry steps)"
    DRIFT_SLACK = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.watch = SeriesWatch(fast_window(), Levels(develop=5.0, confirm=10.0, critical=25.0,
                                                       persist=3))
        self.slow = RobustWindow(window=100, lag=50, min_count=30, floor=LOG_FLOOR)
        self.cusum = Cusum(self.DRIFT_SLACK)
        # A slow rise alone is only "developing": healthy runs' gradient norms often climb for
        # a while (the loss sharpens); confirmation needs a sudden jump or other detectors.
        self.drift = Escalation(Levels(develop=30.0, confirm=1e9, persist=5, max_level=1))
        self.pace = LearningPace()

    def observe(self, kind: str, item: Scalars) -> list[Finding]:
        self.pace.update(item.values.get(LOSS.name))
        x = finite_log(item.values.get(GRAD_NORM.name, math.nan))
        if math.isnan(x):
            return []
        self.seen()
        slow_z = self.slow.zscore(x)
        self.slow.update(x)
        drift = self.cusum.update(slow_z)
        if slow_z is not None and slow_z < 0:
            self.cusum.value *= 0.9  # a healthy fall bleeds the accumulated drift away
        drift_level = self.drift.level(drift)
        level, z = self.watch.observe(item.step, x)
        score = max(z or 0.0, drift / 10.0)
        both = max(level, drift_level)
        if both < 3 and self.pace.fast():
            both = min(both, 1)
        kind_text = "jumped to" if level >= drift_level else "has been drifting up to"
        return [finding(
            self.name, item.step, both, score,
            evidence=self.watch.evidence(series="log grad_norm", drift_cusum=round(drift, 2)),
            message=f"gradient norm {math.exp(x):.4g} {kind_text} {z or 0:.1f} robust scales above "
                    f"this run's trailing baseline (drift statistic {drift:.0f})",
            suggestion="the learning rate is too high or an instability is building; lower the "
                       "learning rate or clip gradients", confidence=0.6 if both >= 2 else 0.45)]


def applied_grad_norm(values: dict[str, float]) -> float:
    """The gradient norm the optimizer was given: after clipping on clipped steps."""
    return values.get(GRAD_NORM_CLIPPED, values.get(GRAD_NORM.name, math.nan))


class LogSeriesFall(Detector):
    """A positive per-step series (taken in log space) falls far below its trailing baseline.
    Subclasses name the series (:meth:`value`), its scale floor and the suggestion."""

    kinds = frozenset({ChangeKind.SCALARS})
    what: ClassVar[str] = ""
    series: ClassVar[str] = ""
    floor: ClassVar[float] = LOG_FLOOR
    suggestion: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.watch = SeriesWatch(
            RobustWindow(window=100, lag=5, min_count=CALIBRATION, floor=self.floor),
            Levels(develop=8.0, confirm=16.0, critical=60.0, persist=3), direction=-1.0)

    def value(self, values: dict[str, float]) -> float:
        raise NotImplementedError

    def observe(self, kind: str, item: Scalars) -> list[Finding]:
        x = finite_log(self.value(item.values))
        if math.isnan(x):
            return []
        self.seen()
        level, z = self.watch.observe(item.step, x)
        return [finding(
            self.name, item.step, level, z, evidence=self.watch.evidence(series=self.series),
            message=f"{self.what} {math.exp(x):.3g} fell {z or 0:.1f} robust scales below this "
                    "run's trailing baseline",
            suggestion=self.suggestion, confidence=0.55)]


class VanishingGradients(LogSeriesFall):
    """The gradient norm the optimizer is given (after any clipping) collapses far below its
    trailing baseline: gradients that vanish, or clipping that throttles them to nothing."""

    name = "vanishing_gradients"
    waiting_for = GradientExplosion.waiting_for
    what, series = "gradient norm", "log grad_norm (after clipping)"
    suggestion = ("gradients are vanishing (saturated activations, a blocked path, a loss "
                  "scaled to nothing, or clipping far too tight); lowering the learning rate "
                  "would make this worse")

    def value(self, values: dict[str, float]) -> float:
        return applied_grad_norm(values)


class UpdateStall(LogSeriesFall):
    """The relative step size (update_ratio) falls orders of magnitude below its trailing
    baseline: the weights stop moving (a learning rate or clipping far too small). A schedule's
    decay is slow enough for the baseline to follow, and its steps small next to the floor."""

    name = "update_stall"
    waiting_for = "no update_ratio telemetry yet"
    what, series, floor = "relative update size", "log update_ratio", UPDATE_FLOOR
    suggestion = ("the weights have almost stopped moving: a learning rate or a gradient "
                  "clipping threshold far too small, or a schedule that decays to nothing")

    def value(self, values: dict[str, float]) -> float:
        return values.get(UPDATE_RATIO.name, math.nan)


#: Robust scales by which the step size per unit learning rate must jump to be judged.
JUMP_SCALES = 9.0


class OptimizerState(Detector):
    """Optimizer-state corruption, derived server-side: the step size per unit learning rate
    (update_ratio / lr) jumps while the gradient norm stays normal, i.e. the update no longer
    follows from the gradient and the learning rate: the moment buffers disagree with them."""

    name = "optimizer_state"
    kinds = frozenset({ChangeKind.SCALARS})
    family = LOCAL_STATISTICS  # the optimizer's own state (SPEC: a local detector)
    waiting_for = "no update_ratio/lr telemetry yet"

    def __init__(self) -> None:
        super().__init__()
        # Only a jump counts (develop = confirm): a corrupted moment buffer moves the step
        # size by one to two orders of magnitude at once (9-37 robust scales on the tuning
        # runs); Adam's own step grows over several steps, by 6-7 scales, as its second moment
        # lags a gradient that starts to grow late in training (the demo at 2,000 steps,
        # seeds 0 and 1), which is the start of an instability, not a corrupted state.
        levels = Levels(develop=JUMP_SCALES, confirm=JUMP_SCALES, critical=40.0, persist=3)
        self.watch = SeriesWatch(fast_window(), levels)
        self.grads = fast_window()

    def observe(self, kind: str, item: Scalars) -> list[Finding]:
        ratio, lr = item.values.get(UPDATE_RATIO.name), item.values.get(LR.name)
        grad = finite_log(item.values.get(GRAD_NORM.name, math.nan))
        if ratio is None or lr is None or not lr > 0 or math.isnan(grad):
            return []
        x = finite_log(ratio / lr)
        if math.isnan(x):
            return []
        self.seen()
        grad_z = self.grads.zscore(grad)
        self.grads.update(grad)
        grads_normal = grad_z is not None and abs(grad_z) < 4.0
        score = self.watch.score(x)
        level, _ = self.watch.observe(item.step, x)
        if not grads_normal and level < 3:
            # With the gradient itself anomalous, a large update is explained by it.
            self.watch.escalation.run = 0
            level = 0
        return [finding(
            self.name, item.step, level, score,
            evidence=self.watch.evidence(series="log(update_ratio / lr)",
                                         grad_z=round(grad_z, 2) if grad_z is not None else None),
            message=f"the update per unit learning rate jumped {score or 0:.1f} robust scales "
                    "above its baseline while the gradient norm stayed normal",
            suggestion="the optimizer's moment buffers no longer match the gradients (corrupted "
                       "or stale state, e.g. after a restore or an explosion); reset the "
                       "optimizer state", confidence=0.5)]


class WeightDrift(Detector):
    """Per layer, the rate of change of log |W| jumps above its trailing baseline: weights
    growing (or shrinking) much faster than this run's layers did.

    Only a *jump* counts: the rate must also be at least ``JUMP`` times its median over the
    last ``RECENT`` observations when the episode starts. Healthy runs can speed up their
    weight-norm growth smoothly and a lot (the demo CNN's last conv layer: 20x over 60 steps
    at a constant learning rate, as its updates align), which a long trailing baseline alone
    reads as an anomaly; a learning-rate spike or a sudden corruption of the weights moves the
    rate by an order of magnitude from one step to the next."""

    name = "weight_drift"
    kinds = frozenset({ChangeKind.LAYER_STATS})
    waiting_for = "no per-layer weight norms yet"
    JUMP = 4.0
    RECENT = 10
    #: Smallest scale of the rate (|d log weight_norm| per step): 1e-4, a weight norm moving
    #: 1% per 100 steps. Late in training a layer's norm moves 1e-6 per step, at the
    #: resolution of its float32 value, where a jump to 1e-5 is rounding, not drift (the
    #: healthy demo CNN raised three such alerts in 2,000 steps with a floor of 1e-6).
    RATE_FLOOR = 1e-4

    def __init__(self) -> None:
        super().__init__()
        self.watches: dict[str, SeriesWatch] = {}
        self.last: dict[str, tuple[int, float]] = {}
        self.recent: dict[str, deque[float]] = {}
        self.in_episode: dict[str, bool] = {}

    def observe(self, kind: str, item: LayerStats) -> list[Finding]:
        if WEIGHT_NORM.name not in item.stats:
            return []
        self.seen()
        column = item.values[:, item.stats.index(WEIGHT_NORM.name)]
        found = []
        for layer, norm in zip(item.layers, column):
            found.extend(self._layer(item.step, layer, finite_log(float(norm))))
        return found

    def _layer(self, step: int, layer: str, x: float) -> list[Finding]:
        previous = self.last.get(layer)
        if math.isnan(x):
            return []
        self.last[layer] = (step, x)
        if previous is None or step <= previous[0]:
            return []
        rate = abs(x - previous[1]) / (step - previous[0])
        watch = self.watches.setdefault(layer, SeriesWatch(
            RobustWindow(window=100, lag=5, min_count=CALIBRATION, floor=self.RATE_FLOOR,
                         rel_floor=0.2),
            Levels(develop=10.0, confirm=25.0, critical=100.0, persist=5)))
        recent = self.recent.setdefault(layer, deque(maxlen=self.RECENT))
        jumped = bool(recent) and rate >= self.JUMP * float(np.median(recent))
        recent.append(rate)
        z = watch.score(rate)
        if z is None or z < watch.escalation.levels.develop:
            self.in_episode[layer] = False
        elif jumped:
            self.in_episode[layer] = True
        if not self.in_episode.get(layer, False):
            watch.record(step, rate)  # a smooth speed-up becomes this run's normal
            return [finding(self.name, step, 0, z, layer=layer)]
        level, z = watch.observe(step, rate)
        return [finding(
            self.name, step, level, z, layer=layer,
            evidence=watch.evidence(series="|d log weight_norm| per step", layer=layer,
                                    recent_median=float(np.median(recent))),
            message=f"weights of {layer} change {z or 0:.1f} robust scales faster than this "
                    "run's trailing baseline, after a jump from one step to the next",
            suggestion="updates are too large for this layer (learning rate, or a drift towards "
                       "an unstable region); representations may be collapsing onto few "
                       "directions", confidence=0.45)]
