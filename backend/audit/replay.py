"""Audit a stored run offline: rebuild its stream from the store, in step order, and run every
detector on it exactly as the live engine would (causal: each step sees only earlier steps).

Used to audit runs stored before the engine existed or while it was off, and to study the
detectors on recorded runs. :func:`replay_run` returns the alerts without writing them unless
``write=True``.
"""

from __future__ import annotations

from typing import Any, Collection

from sentrycam.backend.audit.alerts import Alert
from sentrycam.backend.audit.engine import RunAudit
from sentrycam.backend.audit.history import stored_changes


class _MemoryAlerts:
    """Stands in for the store's alert table when a replay must not write: hands out ids."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.next_id = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def upsert_alert(self, run_id: str, alert: Any, alert_id: int | None = None) -> int:
        if alert_id is None:
            alert_id, self.next_id = self.next_id, self.next_id + 1
        return alert_id


def replay_run(store: Any, run_id: str, *, write: bool = False,
               detectors: Collection[str] | None = None) -> tuple[list[Alert], dict]:
    """Run every detector (or only those named in ``detectors``) over the stored run; returns
    (alerts as finally folded, status)."""
    final: dict[int, Alert] = {}
    target = store if write else _MemoryAlerts(store)
    audit = RunAudit(run_id, target, lambda alert: final.__setitem__(alert.alert_id, alert))
    if detectors is not None:
        audit.detectors = [d for d in audit.detectors if d.name in detectors]
    for change in stored_changes(store, run_id):
        audit.handle(change)
    for alert in audit.book.flush():
        final[alert.alert_id] = alert
    return sorted(final.values(), key=lambda a: (a.step, a.alert_id)), audit.status()
