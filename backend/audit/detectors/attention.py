"""Attention collapse, from the per-head attention statistics of each snapshot.

Capture measures every ``nn.MultiheadAttention`` head on the probe at each snapshot
(:mod:`sentrycam.capture.attention`): ``attn_entropy`` (nats) and ``attn_agreement`` (how alike
the module's heads attend, 1 = identical) arrive as LayerStats with one row per head. A head
collapses in one of two ways, each judged against the head's own recent snapshots:

- **onto one key**: log(entropy) falls far below its trailing baseline (the softmax saturates:
  logits grew, e.g. a query/key projection blew up);
- **into its neighbours' pattern**: -log(1 - agreement) rises far above its baseline (every
  head attends alike, uniform attention included: the heads stopped specialising).

A head gives one finding per snapshot: the worse of the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sentrycam.backend.audit.alerts import Finding
from sentrycam.backend.audit.baselines import Levels, RobustWindow, finite_log
from sentrycam.backend.audit.detectors.base import (LOCAL_STATISTICS, Detector, SeriesWatch,
                                                    finding)
from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.messages import LayerStats
from sentrycam.protocol.signals import ATTN_AGREEMENT, ATTN_ENTROPY

#: Trailing snapshots a head's baseline spans: attention sharpens slowly as a model learns,
#: and the baseline follows that; a collapse moves it within a snapshot or two.
WINDOW = 8
#: Snapshots that calibrate a head before it is judged.
CALIBRATION = 4
#: Smallest scale, in log units: changes under about 10% are never more than noise.
LOG_FLOOR = 0.1
LEVELS = Levels(develop=6.0, confirm=10.0, critical=20.0, persist=3)


@dataclass(frozen=True)
class Pattern:
    """One way a head collapses: ``stat`` read, ``transform``ed into the watched series,
    scored in ``direction`` (+1 a rise, -1 a fall)."""

    key: str
    stat: str
    direction: float
    what: str

    def series(self, value: float) -> float:
        if self.stat == ATTN_ENTROPY.name:
            return finite_log(value)
        return -finite_log(1.0 - value) if value <= 1.0 else math.nan


PATTERNS = (
    Pattern("sharpening", ATTN_ENTROPY.name, -1.0,
            "attends to a single key: its attention entropy fell to {value:.3g} nats"),
    Pattern("uniformity", ATTN_AGREEMENT.name, 1.0,
            "attends like the module's other heads: their agreement rose to {value:.3f}"),
)


class AttentionCollapse(Detector):
    """Per attention head, a collapse onto one key or into the other heads' pattern."""

    name = "attention_collapse"
    family = LOCAL_STATISTICS  # per-head statistics of the probe pass, as layer statistics
    kinds = frozenset({ChangeKind.LAYER_STATS})
    waiting_for = ("no attention statistics yet (capture sends them with each snapshot of a "
                   "model built on nn.MultiheadAttention)")

    def __init__(self) -> None:
        super().__init__()
        self.watches: dict[tuple[str, str], SeriesWatch] = {}

    def observe(self, kind: str, item: LayerStats) -> list[Finding]:
        if ATTN_ENTROPY.name not in item.stats:
            return []
        self.seen()
        found = []
        for row, layer in enumerate(item.layers):
            judged = [self._judge(item, row, pattern) for pattern in PATTERNS
                      if pattern.stat in item.stats]
            judged = [j for j in judged if j is not None]
            if judged:
                found.append(max(judged, key=lambda f: (f.level, f.magnitude)))
        return found

    def _judge(self, item: LayerStats, row: int, pattern: Pattern) -> Finding | None:
        layer = item.layers[row]
        value = float(item.values[row, item.stats.index(pattern.stat)])
        series = pattern.series(value)
        if not math.isfinite(series):
            return None  # not an attention head (a merged replay row), or a single head
        watch = self.watches.get((layer, pattern.key))
        if watch is None:
            watch = self.watches[(layer, pattern.key)] = SeriesWatch(
                RobustWindow(window=WINDOW, lag=0, min_count=CALIBRATION, floor=LOG_FLOOR),
                LEVELS, direction=pattern.direction)
        level, z = watch.observe(item.step, series)
        return finding(
            self.name, item.step, level, z, layer=layer,
            evidence=watch.evidence(series=f"{pattern.key} ({pattern.stat})", layer=layer,
                                    value=value),
            message=f"attention head {layer} " + pattern.what.format(value=value)
                    + f" ({z or 0:.1f} robust scales from its own recent snapshots)",
            suggestion="the attention logits saturated or lost their spread: check the scale "
                       "of the query/key projections (a learning-rate spike, missing 1/sqrt(d) "
                       "scaling or normalisation before attention), lower the learning rate, "
                       "or add weight decay or QK normalisation", confidence=0.6)
