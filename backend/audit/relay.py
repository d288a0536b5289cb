"""Alerts back to the training process, on the ingest websocket it streams through.

The ingest route tells the :class:`AlertRelay` which connection carries which run; the relay
listens to the change feed and sends each alert of that run to those connections as a JSON text
frame ``{"type": "alert", "run_id": R, "alert": {...}}``. The capture agent ignores these frames
unless the user passed ``attach(..., on_alert=callback)``: by default nothing reaches training.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, Sequence

from sentrycam.backend.feed import Change, ChangeFeed
from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.wire import alert_reply


class Notifiable(Protocol):
    def notify(self, reply: dict) -> None: ...


class AlertRelay:
    """run_id -> connections (sinks with a thread-safe ``notify(dict)``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: dict[str, set[Any]] = {}
        self._subscription = None
        self.sent = 0

    def start(self, feed: ChangeFeed) -> None:
        self._subscription = feed.subscribe(self._on_changes, name="alert-relay")

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()

    def watch(self, run_id: str, sink: Notifiable) -> None:
        with self._lock:
            self._sinks.setdefault(run_id, set()).add(sink)

    def forget(self, sink: Notifiable) -> None:
        with self._lock:
            for run_id in [r for r, sinks in self._sinks.items() if sink in sinks]:
                self._sinks[run_id].discard(sink)
                if not self._sinks[run_id]:
                    del self._sinks[run_id]

    def _on_changes(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if change.kind != ChangeKind.ALERT or not isinstance(change.message, dict):
                continue
            with self._lock:
                sinks = list(self._sinks.get(change.run_id, ()))
            for sink in sinks:
                sink.notify(alert_reply(change.run_id, change.message))
                self.sent += 1
