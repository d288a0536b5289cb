"""Findings and alerts: what a detector says about one observation, and what the user sees.

A detector returns a :class:`Finding` for each observation it judged (level 0 included: "looked,
fine"). The :class:`AlertBook` of a run folds findings into alerts: the first finding at level
>= 1 of a (detector, layer) opens an :class:`Alert`; later findings of that pair update it (its
duration, its highest severity and magnitude, the newest evidence) instead of raising a new one;
``QUIET_TO_CLOSE`` level-0 observations in a row close it, and a later firing opens a new alert.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping

SEVERITY_NAMES = ("none", "developing", "confirmed", "critical")

#: Consecutive quiet observations that close an open alert.
QUIET_TO_CLOSE = 5
#: An open alert is written again at least every this many observations while it persists.
REWRITE_EVERY = 10


@dataclass(frozen=True)
class Finding:
    """A detector's judgement of one observation at ``step``. ``level`` 0-3; ``magnitude``: how
    far from the run's own baseline (in the detector's units, e.g. robust z-score)."""

    detector: str
    step: int
    level: int
    layer: str | None = None
    magnitude: float = 0.0
    evidence: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""
    suggestion: str = ""
    confidence: float = 0.5


@dataclass(frozen=True)
class Alert:
    """One alert as stored (``Store.upsert_alert``) and served. ``step``: first step it fired;
    ``last_step``: the latest step it was seen; ``duration``: steps between the two."""

    run_id: str
    detector: str
    layer: str | None
    step: int
    last_step: int
    severity: int
    magnitude: float
    duration: int
    evidence: Mapping[str, Any]
    message: str
    suggestion: str
    confidence: float
    alert_id: int | None = None
    confirmed_step: int | None = None  # first step at severity >= 2

    def record(self) -> dict[str, Any]:
        """The mapping ``Store.upsert_alert`` takes (JSON-safe magnitude)."""
        data = asdict(self)
        for key in ("run_id", "alert_id", "last_step", "confirmed_step"):
            data.pop(key)
        data["evidence"] = {**self.evidence, "last_step": self.last_step,
                            "confirmed_step": self.confirmed_step}
        if not math.isfinite(data["magnitude"]):
            data["magnitude"] = None
        return data


@dataclass
class _Episode:
    alert: Alert
    quiet: int = 0
    since_write: int = 0


Writer = Callable[[Alert], int]


class AlertBook:
    """Open alerts of one run. ``write(alert) -> alert_id`` stores an alert (insert when its
    ``alert_id`` is None, else update) and returns its id; :meth:`fold` returns the alerts that
    were written, so that the caller can announce them."""

    def __init__(self, run_id: str, write: Writer) -> None:
        self.run_id = run_id
        self._write = write
        self._open: dict[tuple[str, str | None], _Episode] = {}
        self.raised = 0

    def open_alerts(self) -> list[Alert]:
        return [episode.alert for episode in self._open.values()]

    def fold(self, findings: list[Finding]) -> list[Alert]:
        written: list[Alert] = []
        for finding in findings:
            alert = self._fold_one(finding)
            if alert is not None:
                written.append(alert)
        return written

    def _fold_one(self, finding: Finding) -> Alert | None:
        key = (finding.detector, finding.layer)
        episode = self._open.get(key)
        if finding.level <= 0:
            if episode is not None:
                episode.quiet += 1
                if episode.quiet >= QUIET_TO_CLOSE:
                    del self._open[key]
            return None
        if episode is None:
            alert = self._new(finding)
            alert = replace(alert, alert_id=self._write(alert))
            self._open[key] = _Episode(alert)
            self.raised += 1
            return alert
        return self._extend(episode, finding)

    def _new(self, finding: Finding) -> Alert:
        return Alert(run_id=self.run_id, detector=finding.detector, layer=finding.layer,
                     step=finding.step, last_step=finding.step, severity=finding.level,
                     magnitude=finding.magnitude, duration=0, evidence=dict(finding.evidence),
                     message=finding.message, suggestion=finding.suggestion,
                     confidence=finding.confidence,
                     confirmed_step=finding.step if finding.level >= 2 else None)

    def _extend(self, episode: _Episode, finding: Finding) -> Alert | None:
        old = episode.alert
        episode.quiet = 0
        episode.since_write += 1
        escalated = finding.level > old.severity
        stronger = _larger(finding.magnitude, old.magnitude)
        updated = replace(
            old, last_step=max(old.last_step, finding.step),
            duration=max(old.duration, finding.step - old.step),
            severity=max(old.severity, finding.level),
            magnitude=finding.magnitude if stronger else old.magnitude,
            evidence=dict(finding.evidence) if (escalated or stronger) else old.evidence,
            message=finding.message if escalated else old.message,
            suggestion=finding.suggestion if escalated else old.suggestion,
            confidence=max(old.confidence, finding.confidence),
            confirmed_step=old.confirmed_step if old.confirmed_step is not None
            else (finding.step if finding.level >= 2 else None))
        episode.alert = updated
        if escalated or episode.since_write >= REWRITE_EVERY:
            episode.since_write = 0
            self._write(updated)
            return updated
        return None

    def flush(self) -> list[Alert]:
        """Write every open alert whose latest duration is not stored yet (run end, shutdown)."""
        written = []
        for episode in self._open.values():
            if episode.since_write:
                episode.since_write = 0
                self._write(episode.alert)
                written.append(episode.alert)
        return written


def _larger(new: float, old: float) -> bool:
    if math.isnan(new):
        return False
    return math.isnan(old) or abs(new) > abs(old)
