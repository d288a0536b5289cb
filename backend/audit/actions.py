"""Opt-in actions on alerts. Default: none (report only).

:class:`WebhookAction` POSTs an alert as JSON to a URL the operator configured
(``SENTRYCAM_ALERT_WEBHOOK_URL``) once the alert reaches the configured minimum severity
(``SENTRYCAM_ALERT_WEBHOOK_MIN_SEVERITY``, default 3). Each alert is sent at most once per
severity it reaches. Posting happens on the action's own thread, so a slow or dead endpoint
never delays the audit; failures are logged and counted.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.request
from typing import Any, Sequence

from sentrycam.backend.feed import Change, ChangeFeed
from sentrycam.protocol.changes import ChangeKind

log = logging.getLogger(__name__)

_STOP = object()


class WebhookAction:
    """Posts alert changes of severity >= ``min_severity`` to ``url``."""

    def __init__(self, url: str, min_severity: int = 3, timeout_s: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"alert webhook URL must start with http:// or https://, got {url!r}")
        self.url, self.min_severity, self.timeout_s = url, int(min_severity), timeout_s
        self.counts = {"sent": 0, "failed": 0}
        self._sent: set[tuple[Any, int]] = set()
        self._queue: queue.Queue = queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._loop, name="sentrycam-webhook", daemon=True)
        self._subscription = None

    def start(self, feed: ChangeFeed) -> None:
        self._subscription = feed.subscribe(self._on_changes, name="alert-webhook")
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._subscription is not None:
            self._subscription.close()
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _on_changes(self, changes: Sequence[Change]) -> None:
        for change in changes:
            alert = change.message
            if change.kind != ChangeKind.ALERT or not isinstance(alert, dict):
                continue
            key = (alert.get("alert_id"), int(alert.get("severity", 0)))
            if key[1] < self.min_severity or key in self._sent:
                continue
            self._sent.add(key)
            try:
                self._queue.put_nowait(alert)
            except queue.Full:
                self.counts["failed"] += 1
                log.warning("alert webhook queue full; alert %s not sent", key[0])

    def _loop(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is _STOP:
                return
            try:
                self.post(alert)
                self.counts["sent"] += 1
            except Exception as exc:
                self.counts["failed"] += 1
                log.warning("alert webhook %s failed: %s", self.url, exc)

    def post(self, alert: dict[str, Any]) -> None:
        body = json.dumps({"type": "sentrycam.alert", "alert": alert}, default=str).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            response.read()
