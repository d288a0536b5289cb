"""Causal, self-calibrating statistics shared by the detectors.

Everything here sees a series one value at a time and decides with the values seen so far only:
no centred window, no look-ahead. Each detector calibrates on its run's own history:

- :class:`RobustWindow`: median and MAD-based scale of a trailing window that ends ``lag``
  observations back (so a change in progress does not pull its own baseline along).
- :class:`RunningBest`: the best value seen so far of a series that is expected to improve
  (loss falling, accuracy rising), with the series' own observation-to-observation noise as scale;
  a degradation is measured as the distance from the best in units of that noise.
- :class:`Ewma`, :class:`Cusum`: exponentially weighted mean and a one-sided CUSUM on z-scores
  (slow drifts that no single observation shows).
- :class:`Escalation`: turns a z-score stream into a severity (0-3) from magnitude and duration.
- :class:`LearningPace`: whether the training loss is falling fast (a model taking off).

No threshold here is set by the user; the constants are in units of the run's own noise.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable

import numpy as np

#: MAD -> standard deviation for normally distributed noise.
MAD_TO_SD = 1.4826


#: The smallest noise scale a score divides by: a floor derived from the values themselves is 0
#: when they are all 0 (a layer collapsed to one point from the start).
MIN_SCALE = 1e-12


def robust_center_scale(values: Iterable[float], floor: float = 0.0) -> tuple[float, float]:
    """(median, max(1.4826 * MAD, floor)) of the finite values; (nan, nan) when there are none."""
    array = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    center = float(np.median(array))
    scale = MAD_TO_SD * float(np.median(np.abs(array - center)))
    return center, max(scale, floor)


def finite_log(value: float, tiny: float = 1e-30) -> float:
    """log(value) for a positive finite value; nan otherwise (zero maps to log(tiny))."""
    if not math.isfinite(value) or value < 0:
        return math.nan
    return math.log(max(value, tiny))


class RobustWindow:
    """Trailing robust baseline: median/scale of up to ``window`` values ending ``lag`` back.

    ``floor`` bounds the scale from below (a constant series has MAD 0; a relative floor
    ``rel_floor`` * |median| keeps z-scores meaningful for series far from zero).
    """

    def __init__(self, window: int = 100, lag: int = 0, min_count: int = 20,
                 floor: float = 1e-12, rel_floor: float = 0.0) -> None:
        self.window, self.lag, self.min_count = window, lag, min_count
        self.floor, self.rel_floor = floor, rel_floor
        self._values: deque[float] = deque(maxlen=window + lag)

    def reference(self) -> list[float]:
        values = list(self._values)
        return values[:len(values) - self.lag] if self.lag else values

    @property
    def ready(self) -> bool:
        return sum(1 for v in self.reference() if math.isfinite(v)) >= self.min_count

    def center_scale(self) -> tuple[float, float]:
        center, scale = robust_center_scale(self.reference(), self.floor)
        if math.isfinite(center):
            scale = max(scale, self.rel_floor * abs(center))
        return center, scale

    def zscore(self, value: float) -> float | None:
        """How many baseline scales ``value`` lies above the baseline; None until ready."""
        if not self.ready or not math.isfinite(value):
            return None
        center, scale = self.center_scale()
        return (value - center) / max(scale, MIN_SCALE)

    def update(self, value: float) -> None:
        if math.isfinite(value):
            self._values.append(value)


class RunningBest:
    """Distance of a series from its best value so far, in units of its own noise.

    ``higher_is_better`` says which way is good. The noise scale comes from the first differences
    of the last ``noise_window`` observations (see :meth:`scale`), floored by ``floor``;
    ``min_count`` observations calibrate before any score is given.
    """

    def __init__(self, higher_is_better: bool, noise_window: int = 50, min_count: int = 5,
                 floor: float = 1e-12) -> None:
        self.sign = 1.0 if higher_is_better else -1.0
        self.min_count, self.floor = min_count, floor
        self.best = math.nan
        self.count = 0
        self._diffs: deque[float] = deque(maxlen=noise_window)
        self._last = math.nan
        self._last_anomalous = False

    def scale(self) -> float:
        """Typical size of one observation's move (median |difference| as a standard deviation,
        over sqrt(2)): not centred on the median difference, so a steady improvement counts as
        movement and does not shrink the scale that later degradations are measured in."""
        if len(self._diffs) < 2:
            return max(self.floor, MIN_SCALE)
        typical = MAD_TO_SD * float(np.median(np.abs(np.asarray(self._diffs))))
        return max(typical / math.sqrt(2.0), self.floor, MIN_SCALE)

    def degradation(self, value: float) -> float | None:
        """How many noise scales ``value`` is worse than the best so far; None until ready."""
        if self.count < self.min_count or not math.isfinite(value) or not math.isfinite(self.best):
            return None
        return self.sign * (self.best - value) / self.scale()

    def update(self, value: float, anomalous: bool = False) -> None:
        """Add ``value``. The move into or out of an ``anomalous`` value stays out of the noise
        scale, so that an incident does not widen the yardstick it is measured with."""
        if not math.isfinite(value):
            return
        if math.isfinite(self._last) and not (anomalous or self._last_anomalous):
            self._diffs.append(value - self._last)
        self._last, self._last_anomalous = value, anomalous
        self.count += 1
        if not math.isfinite(self.best) or self.sign * (value - self.best) > 0:
            self.best = value


class Ewma:
    """Exponentially weighted mean with span ``span`` (alpha = 2 / (span + 1))."""

    def __init__(self, span: float) -> None:
        self.alpha = 2.0 / (span + 1.0)
        self.value = math.nan

    def update(self, x: float) -> float:
        if math.isfinite(x):
            self.value = x if not math.isfinite(self.value) else \
                self.value + self.alpha * (x - self.value)
        return self.value


class Cusum:
    """One-sided CUSUM on z-scores: S = max(0, S + z - slack); reset by :meth:`reset`.

    A persistent shift of d baseline scales (d > slack) accumulates (d - slack) per observation,
    so a small sustained drift is found that no single observation shows.
    """

    def __init__(self, slack: float = 1.0) -> None:
        self.slack = slack
        self.value = 0.0

    def update(self, z: float | None) -> float:
        if z is not None and math.isfinite(z):
            self.value = max(0.0, self.value + z - self.slack)
        return self.value

    def reset(self) -> None:
        self.value = 0.0


class LearningPace:
    """Is the training loss falling fast? The median log-loss of the last ``recent`` steps lies
    more than ``margin`` robust scales below the median of the ``window`` steps before them.

    When a model takes off (leaves its initial plateau, or a warm-up or one-cycle schedule
    reaches a rate that learns), its gradients grow, its weights and representations
    reorganise: judged alone these read as an explosion or a collapse, but they come with the
    loss falling faster than it did. A steady decline stays within the trailing window's own
    spread (a linear trend puts the recent median about 1.4 scales below the centre) and
    does not count; a failure makes the loss rise, not fall.
    """

    def __init__(self, recent: int = 10, window: int = 100, margin: float = 3.0,
                 min_count: int = 30) -> None:
        self.recent, self.margin, self.min_count = recent, margin, min_count
        self._values: deque[float] = deque(maxlen=recent + window)

    def update(self, loss: float | None) -> None:
        x = finite_log(loss) if loss is not None else math.nan
        if math.isfinite(x):
            self._values.append(x)

    def fast(self) -> bool:
        values = list(self._values)
        if len(values) < self.recent + self.min_count:
            return False
        center, scale = robust_center_scale(values[:-self.recent], 1e-3)
        return float(np.median(values[-self.recent:])) < center - self.margin * scale


@dataclass(frozen=True)
class Levels:
    """Severity rule of a detector, in units of its own z-score.

    ``develop``: level 1 from this score; ``confirm``: level 2 from this score at once, or from
    ``develop`` held for ``persist`` consecutive observations; ``critical``: level 3 from this
    score held for ``persist`` observations (or ``max_level`` caps the rule).
    """

    develop: float = 4.0
    confirm: float = 10.0
    critical: float = 30.0
    persist: int = 3
    max_level: int = 3


class Escalation:
    """Severity of the current observation from its score and how long the score has held."""

    def __init__(self, levels: Levels) -> None:
        self.levels = levels
        self.run = 0  # consecutive observations at or above ``develop``

    def level(self, score: float | None) -> int:
        lv = self.levels
        if score is None or not math.isfinite(score) or score < lv.develop:
            self.run = 0
            return 0
        self.run += 1
        held = self.run >= lv.persist
        level = 1
        if score >= lv.confirm or held:
            level = 2
        if score >= lv.critical and held:
            level = 3
        return min(level, lv.max_level)
