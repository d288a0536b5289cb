"""Starting and stopping the audit engine (and its opt-in actions) with the server.

``settings.audit_engine`` "process" (the default) runs the engine in a child process
(:class:`~sentrycam.backend.audit.process.AuditProcess`: its CPU time leaves the server's GIL
and the ingest path); "thread" runs it on a thread of the server process
(:class:`~sentrycam.backend.audit.engine.AuditEngine`). Both store and announce the same alerts.
"""

from __future__ import annotations

import logging
from typing import Any

from sentrycam.backend.audit.actions import WebhookAction
from sentrycam.backend.audit.engine import AuditEngine
from sentrycam.backend.audit.process import AuditProcess
from sentrycam.backend.audit.relay import AlertRelay

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0


def start_audit(state: Any, settings: Any) -> None:
    """Start the engine on ``state.store``/``state.feed`` (``state.audit``), the relay of alerts
    to the ingest connections (``state.alert_relay``), and the webhook action when a URL is
    configured (``state.alert_webhook``)."""
    state.audit, state.alert_webhook, state.alert_relay = None, None, None
    if not settings.audit:
        log.info("audit engine disabled by settings")
        return
    kind = AuditProcess if settings.audit_engine == "process" else AuditEngine
    engine = kind(state.store, state.feed)
    engine.start()
    state.audit = engine
    state.alert_relay = AlertRelay()  # to trainers that asked for alerts (attach(on_alert=...))
    state.alert_relay.start(state.feed)
    if settings.alert_webhook_url:
        action = WebhookAction(settings.alert_webhook_url, settings.alert_webhook_min_severity)
        action.start(state.feed)
        state.alert_webhook = action
        log.info("alerts of severity >= %d are posted to the configured webhook",
                 settings.alert_webhook_min_severity)


def stop_audit(state: Any) -> None:
    """Stop the engine after the ingest writer drained (it then audits what is queued)."""
    engine = getattr(state, "audit", None)
    if engine is not None:
        engine.stop(STOP_TIMEOUT_S)
    for part in (getattr(state, "alert_webhook", None), getattr(state, "alert_relay", None)):
        if part is not None:
            part.stop()
