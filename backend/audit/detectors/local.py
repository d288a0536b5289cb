"""Local detectors from capture's per-layer statistics: dead units, saturation, gradient-flow
blockage and weight-norm imbalance.

Activation statistics (``dead_frac``, ``sat_frac``) come from the captured layers every few
steps; parameter telemetry (``grad_norm``, ``weight_norm``) from every parameter-owning module at
telemetry steps. Each (detector, layer) pair keeps its own baseline.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace
from typing import Callable

import numpy as np

from sentrycam.backend.audit.alerts import Finding
from sentrycam.backend.audit.baselines import LearningPace, Levels, RobustWindow, finite_log
from sentrycam.backend.audit.detectors.base import (LOCAL_STATISTICS, Detector, SeriesWatch,
                                                    finding)
from sentrycam.backend.audit.detectors.gradients import CALIBRATION
from sentrycam.protocol.messages import LayerStats, Scalars
from sentrycam.protocol.signals import DEAD_FRAC, LAYER_GRAD_NORM, LOSS, SAT_FRAC, WEIGHT_NORM
from sentrycam.protocol.changes import ChangeKind

#: Fractions (dead, saturated) are judged against a noise floor of one unit in fifty.
FRACTION_FLOOR = 0.02
#: Smallest scale of relative log weight norms (5%).
LOG_REL = 0.05


class PerLayer(Detector):
    """A detector that watches one value per layer of the LayerStats carrying ``stat``."""

    stat = ""
    kinds = frozenset({ChangeKind.LAYER_STATS})
    family = LOCAL_STATISTICS

    def __init__(self) -> None:
        super().__init__()
        self.watches: dict[str, SeriesWatch] = {}

    def new_watch(self) -> SeriesWatch:
        raise NotImplementedError

    def values(self, item: LayerStats) -> dict[str, float]:
        column = item.values[:, item.stats.index(self.stat)]
        return {layer: float(v) for layer, v in zip(item.layers, column)}

    def observe(self, kind: str, item: LayerStats) -> list[Finding]:
        if self.stat not in item.stats:
            return []
        self.seen()
        found = []
        for layer, value in self.values(item).items():
            if not math.isfinite(value):
                continue
            watch = self.watches.get(layer) or self.watches.setdefault(layer, self.new_watch())
            level, z = watch.observe(item.step, value)
            found.append(self.judge(item.step, layer, value, level, z, watch))
        return found

    def judge(self, step: int, layer: str, value: float, level: int, z: float | None,
              watch: SeriesWatch) -> Finding:
        raise NotImplementedError


class JumpWatch(SeriesWatch):
    """A fraction judged against its last 10 observations, but only while it got there by a
    jump: the score is the smaller of the level z-score and the largest of the last 3 step
    changes in units of the usual step change. A sudden jump (units dying at once) scores high;
    a steady creep (activations growing while the network trains) does not."""

    RECENT = 3

    def __init__(self) -> None:
        super().__init__(RobustWindow(window=10, lag=1, min_count=5, floor=FRACTION_FLOOR),
                         Levels(develop=5.0, confirm=12.0, critical=30.0, persist=2))
        self.steps = RobustWindow(window=10, lag=1, min_count=4, floor=FRACTION_FLOOR)
        self.jumps: deque[float] = deque(maxlen=self.RECENT)
        self.previous = math.nan

    def score(self, value: float) -> float | None:
        level = super().score(value)
        change = value - self.previous if math.isfinite(self.previous) else math.nan
        jump = self.steps.zscore(change)
        self.steps.update(change)
        self.previous = value
        self.jumps.append(jump if jump is not None else 0.0)
        if level is None:
            return None
        return min(level, max(self.jumps))


def fraction_watch() -> SeriesWatch:
    return JumpWatch()


class DeadUnits(PerLayer):
    """The fraction of units that never activate in a batch rises above its baseline."""

    name = "dead_units"
    stat = DEAD_FRAC.name
    waiting_for = "no activation statistics yet (captured layers send dead_frac every few steps)"

    def new_watch(self) -> SeriesWatch:
        return fraction_watch()

    def judge(self, step, layer, value, level, z, watch) -> Finding:
        return finding(
            self.name, step, level, z, layer=layer,
            evidence=watch.evidence(series=self.stat, layer=layer),
            message=f"{value:.0%} of the units of {layer} never activate in a batch "
                    f"({z or 0:.1f} robust scales above this run's baseline)",
            suggestion="ReLU units died (a large update pushed their biases negative, or the "
                       "learning rate is too high); lower the learning rate, or use a leaky "
                       "activation or a better initialisation", confidence=0.6)


class Saturation(PerLayer):
    """The fraction of saturated values (bounded activations at their bounds, or |x| > 3 on
    unbounded layers) rises above its baseline."""

    name = "saturation"
    stat = SAT_FRAC.name
    waiting_for = DeadUnits.waiting_for

    def new_watch(self) -> SeriesWatch:
        return fraction_watch()

    def judge(self, step, layer, value, level, z, watch) -> Finding:
        return finding(
            self.name, step, level, z, layer=layer,
            evidence=watch.evidence(series=self.stat, layer=layer),
            message=f"{value:.0%} of the values of {layer} are saturated ({z or 0:.1f} robust "
                    "scales above this run's baseline)",
            suggestion="pre-activations grew too large, so the nonlinearity passes almost no "
                       "gradient; normalisation, smaller weights or a lower learning rate may "
                       "help", confidence=0.5)


class GradientFlow(PerLayer):
    """Per layer, log(layer grad norm) - log(median layer grad norm) drops far below its
    baseline: gradient stops reaching that layer while the rest still gets it."""

    name = "gradient_flow"
    stat = LAYER_GRAD_NORM.name
    waiting_for = "no per-layer gradient norms yet"

    def values(self, item: LayerStats) -> dict[str, float]:
        column = item.values[:, item.stats.index(self.stat)].astype(np.float64)
        logs = np.array([finite_log(float(v)) for v in column])
        finite = logs[np.isfinite(logs)]
        if finite.size < 2:
            return {}
        center = float(np.median(finite))
        return {layer: float(v - center) for layer, v in zip(item.layers, logs)}

    def new_watch(self) -> SeriesWatch:
        return SeriesWatch(RobustWindow(window=100, lag=5, min_count=CALIBRATION, floor=0.1),
                           Levels(develop=8.0, confirm=16.0, critical=60.0, persist=3),
                           direction=-1.0)

    def judge(self, step, layer, value, level, z, watch) -> Finding:
        return finding(
            self.name, step, level, z, layer=layer,
            evidence=watch.evidence(series="log grad_norm relative to the median layer",
                                    layer=layer),
            message=f"the gradient reaching {layer} fell {z or 0:.1f} robust scales below its "
                    "usual share of the network's gradient",
            suggestion="gradient flow is blocked at or after this layer (dead or saturated "
                       "units, a detached path, a scale that vanishes); check the layers between "
                       "it and the loss", confidence=0.5)


class WeightNormImbalance(PerLayer):
    """Per layer, log |W| relative to the median layer moves far from its baseline: one layer's
    weights grow or shrink out of proportion with the rest. Held at developing while the loss
    falls fast (:class:`LearningPace`): a model taking off grows its head's weights first."""

    name = "weight_norm_imbalance"
    stat = WEIGHT_NORM.name
    kinds = frozenset({ChangeKind.LAYER_STATS, ChangeKind.SCALARS})
    waiting_for = "no per-layer weight norms yet"
    values: Callable[..., dict[str, float]] = GradientFlow.values

    def __init__(self) -> None:
        super().__init__()
        self.pace = LearningPace()

    def observe(self, kind: str, item: LayerStats | Scalars) -> list[Finding]:
        if kind == ChangeKind.SCALARS:
            self.pace.update(item.values.get(LOSS.name))
            return []
        found = super().observe(kind, item)
        if not self.pace.fast():
            return found
        return [replace(f, level=1) if 1 < f.level < 3 else f for f in found]

    def new_watch(self) -> SeriesWatch:
        return SeriesWatch(RobustWindow(window=100, lag=5, min_count=CALIBRATION, floor=LOG_REL),
                           Levels(develop=8.0, confirm=16.0, critical=60.0, persist=5),
                           direction=0.0)

    def judge(self, step, layer, value, level, z, watch) -> Finding:
        return finding(
            self.name, step, level, z, layer=layer,
            evidence=watch.evidence(series="log weight_norm relative to the median layer",
                                    layer=layer),
            message=f"weights of {layer} moved {z or 0:.1f} robust scales away from their "
                    "usual proportion to the other layers",
            suggestion="one layer dominates (or fades from) the network: per-layer learning "
                       "rates, weight decay or normalisation may be off for it", confidence=0.4)
