"""Incidents: the alerts of one run that belong to one event, with one diagnosis.

Rule (the only place it is defined): alerts are taken in the order they opened (first step,
then id). An alert joins the newest incident that accepts it: one whose latest step, as known
when the alert opened, is at most :data:`JOIN_GAP_STEPS` before the alert's first step (their
step windows overlap or nearly touch: a snapshot-based detector sees an event one snapshot after
a per-step one), or at most :data:`LINKED_GAP_STEPS` before it when the alert's detector speaks
for the same cause as an alert of the incident confirmed by then (causally linked signals:
vanishing gradients, then a loss plateau). Otherwise it opens a new incident. A confirmed alert
spans its first to its last step; a developing one counts only at its first step (a slow drift
that stays developing for hundreds of steps must not chain unrelated events together). An
incident is reported once one of its alerts was confirmed (severity >= :data:`CONFIRMED`);
developing alerts before that are its early evidence.

Incremental and causal: :class:`IncidentBook` takes alerts as they open, and every decision uses
what was known at the step it is made for: an alert is open without a break from its first to
its last step, so a member confirmed by and ending at or after a newcomer's first step was open
and confirmed then. The diagnosis only weighs alerts
that opened by the decision step (confirmation + :data:`DECISION_STEPS`), each with its severity
as of then, so it was decided from data up to that step and holds after it.

Incidents are derived on read from the stored alerts rather than stored: the alert table is
already the durable record (written as alerts fire and kept through restarts), so deriving keeps
incidents consistent with it by construction, needs no migration, and a change of the grouping
or of the rules applies to runs already stored.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from sentrycam.backend.audit.diagnosis import Evidence, cause_of, diagnose

#: An alert opening at most this many steps after an incident's latest step joins it.
JOIN_GAP_STEPS = 30
#: The same, for an alert whose detector speaks for a cause a confirmed alert of the incident
#: speaks for (causally linked signals).
LINKED_GAP_STEPS = 150
#: Severity from which an alert is confirmed (an incident is reported once one is).
CONFIRMED = 2
#: The diagnosis weighs the alerts that opened up to this many steps after the incident was
#: confirmed (one snapshot interval: the representations' view of the event), then holds:
#: what follows a long event (its consequences) must not rewrite its cause.
DECISION_STEPS = JOIN_GAP_STEPS


@dataclass(frozen=True)
class AlertView:
    """What grouping needs of an alert (of a stored record or a live ``Alert``: the same
    fields)."""

    alert_id: int
    detector: str
    layer: str | None
    step: int
    last_step: int
    severity: int
    confirmed_step: int | None

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> AlertView:
        """From an alert dict as ``Store.alerts`` returns it (``evidence`` holds last and
        confirmed step)."""
        evidence = record.get("evidence") or {}
        step = int(record["step"])
        confirmed = evidence.get("confirmed_step")
        return cls(int(record["alert_id"]), str(record["detector"]), record.get("layer"), step,
                   int(evidence.get("last_step") or step), int(record["severity"]),
                   int(confirmed) if confirmed is not None else None)

    @property
    def end(self) -> int:
        """The last step it holds an incident open: its last step if it was confirmed, else
        its first step (see the module's rule)."""
        return self.last_step if self.confirmed_step is not None else self.step

    def severity_at(self, step: int) -> int:
        """Its severity as of ``step``: developing until it was confirmed. (When a confirmed
        alert turned critical is not stored: from confirmation on it counts as it ended.)"""
        if self.confirmed_step is None or self.confirmed_step > step:
            return min(self.severity, CONFIRMED - 1)
        return self.severity


@dataclass
class Incident:
    """One event of a run: its alerts by id, added in the order they opened (:meth:`add`)."""

    run_id: str
    alerts: dict[int, AlertView] = field(default_factory=dict)
    # What grouping knows as of the latest step asked (steps asked never decrease): the latest
    # first step, the latest last step and the causes of the alerts confirmed by then, and a
    # heap of (confirmed step, alert id) of those confirmed later.
    _latest_first: int = -1
    _confirmed_end: int = -1
    _confirmed_causes: set[str] = field(default_factory=set)
    _pending: list[tuple[int, int]] = field(default_factory=list)

    def add(self, alert: AlertView) -> None:
        self.alerts[alert.alert_id] = alert
        self._latest_first = max(self._latest_first, alert.step)
        if alert.confirmed_step is not None:
            heapq.heappush(self._pending, (alert.confirmed_step, alert.alert_id))

    def _advance(self, step: int) -> None:
        while self._pending and self._pending[0][0] <= step:
            member = self.alerts[heapq.heappop(self._pending)[1]]
            self._confirmed_end = max(self._confirmed_end, member.last_step)
            cause = cause_of(member.detector)
            if cause is not None:
                self._confirmed_causes.add(cause)

    def end_at(self, step: int) -> int:
        """Its latest step as known at ``step`` (a confirmed alert spans its first to its last
        step, a developing one counts at its first step)."""
        self._advance(step)
        return max(self._latest_first, min(self._confirmed_end, step))

    def closed_at(self, step: int) -> bool:
        """True when no alert opening at ``step`` or later can join it any more."""
        return step - self.end_at(step) > LINKED_GAP_STEPS and not self._pending

    def accepts(self, alert: AlertView) -> bool:
        gap = alert.step - self.end_at(alert.step)
        if gap <= JOIN_GAP_STEPS:
            return True
        cause = cause_of(alert.detector)
        return gap <= LINKED_GAP_STEPS and cause in self._confirmed_causes

    @property
    def start_step(self) -> int:
        return min(a.step for a in self.alerts.values())

    @property
    def end_step(self) -> int:
        return max(a.end for a in self.alerts.values())

    @property
    def severity(self) -> int:
        return max(a.severity for a in self.alerts.values())

    @property
    def confirmed_step(self) -> int | None:
        steps = [a.confirmed_step for a in self.alerts.values() if a.confirmed_step is not None]
        return min(steps) if steps else None

    @property
    def decided_step(self) -> int:
        """The last step whose alerts the diagnosis weighs."""
        return self.decision_step(DECISION_STEPS)

    def decision_step(self, window: int) -> int:
        """The last step whose alerts a diagnosis deciding ``window`` steps after the
        confirmation weighs."""
        confirmed = self.confirmed_step
        latest = max(a.step for a in self.alerts.values())
        return latest if confirmed is None else min(latest, confirmed + window)

    def evidence(self, until: int | None = None) -> list[Evidence]:
        """Per detector (layers folded together) of the alerts that opened by step ``until``
        (default: all): first step, highest severity and the number of layers by then."""
        first: dict[str, Evidence] = {}
        layers: dict[str, set[str]] = {}
        for alert in self.alerts.values():
            if until is not None and alert.step > until:
                continue
            severity = alert.severity if until is None else alert.severity_at(until)
            if alert.layer is not None:
                layers.setdefault(alert.detector, set()).add(alert.layer)
            seen = first.get(alert.detector)
            if seen is not None:
                severity = max(seen.severity, severity)
            first[alert.detector] = Evidence(
                alert.detector, alert.step if seen is None else min(seen.first_step, alert.step),
                severity, len(layers.get(alert.detector, ())))
        return sorted(first.values(), key=lambda e: (e.first_step, e.detector))

    def report(self) -> dict[str, Any]:
        """The incident as the API and the CLI serve it."""
        decided = self.decided_step
        found = diagnose(self.evidence(decided))
        ordered = sorted(self.alerts.values(), key=lambda a: (a.step, a.alert_id))
        return {
            "run_id": self.run_id, "incident_id": ordered[0].alert_id,
            "start_step": self.start_step, "end_step": self.end_step,
            "confirmed_step": self.confirmed_step, "severity": self.severity,
            "alert_ids": [a.alert_id for a in ordered],
            "detectors": [e.detector for e in self.evidence()],
            "diagnosis": found.diagnosis, "confidence": found.confidence,
            "runners_up": [{"diagnosis": cause, "score": score}
                           for cause, score in found.runners_up],
            "suggestion": found.suggestion,
            "decided_step": decided,
        }


class IncidentBook:
    """The incidents of one run, built as its alerts arrive: each alert once, in the order they
    opened (first step, then id)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.incidents: list[Incident] = []
        self._open: list[Incident] = []  # those an alert may still join

    def add(self, alert: AlertView) -> Incident:
        """Place one alert; returns its incident."""
        self._open = [i for i in self._open if not i.closed_at(alert.step)]
        home = next((i for i in reversed(self._open) if i.accepts(alert)), None)
        if home is None:
            home = Incident(self.run_id)
            self.incidents.append(home)
            self._open.append(home)
        home.add(alert)
        return home

    def reports(self, min_severity: int = CONFIRMED) -> list[dict[str, Any]]:
        """The incidents of at least ``min_severity`` (default: confirmed), oldest first."""
        return [i.report() for i in self.incidents if i.severity >= min_severity]


def book_of(run_id: str, alerts: Iterable[Mapping[str, Any]]) -> IncidentBook:
    """The incident book of one run from its stored alert records (``Store.alerts`` dicts)."""
    book = IncidentBook(run_id)
    views = sorted((AlertView.of_record(a) for a in alerts), key=lambda a: (a.step, a.alert_id))
    for view in views:
        book.add(view)
    return book


def incidents_of(run_id: str, alerts: Iterable[Mapping[str, Any]],
                 min_severity: int = CONFIRMED) -> list[dict[str, Any]]:
    """Incidents of one run from its stored alert records (``Store.alerts`` dicts)."""
    return book_of(run_id, alerts).reports(min_severity)
