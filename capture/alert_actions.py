"""Opt-in reactions to the server's alerts, inside the training process.

With ``attach(..., on_alert=callback)`` the sender thread queues each alert the server sends
back for the run; at the next full optimizer step (within about a second, or 64 steps) the run
calls ``callback(alert, control)`` on the training thread, where changing the optimizer is safe.
``alert`` is the alert dict (step, detector, layer, severity 0-3, magnitude, message,
suggestion...); ``control`` is an :class:`AlertControl`. Nothing happens without a callback, and
an exception in the callback is logged, never raised into training.

    def react(alert, control):
        if alert["severity"] >= 3:
            control.lower_lr(0.5)      # or control.stop(): sets run.stop_requested

    run = capture.attach(model, ..., on_alert=react)
    for batch in data:
        ...
        if run.stop_requested:
            break
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

AlertCallback = Callable[[dict, "AlertControl"], None]


class AlertControl:
    """What an alert callback may do: lower the learning rate, or ask the loop to stop."""

    def __init__(self, inbox: "AlertInbox", optimizer: Any) -> None:
        self._inbox, self._optimizer = inbox, optimizer

    def lower_lr(self, factor: float = 0.5) -> None:
        """Multiply every param group's learning rate by ``factor`` (0 < factor <= 1)."""
        if not 0 < factor <= 1:
            raise ValueError(f"factor must be in (0, 1], got {factor!r}")
        for group in self._optimizer.param_groups:
            group["lr"] = group["lr"] * factor
        self._inbox.lr_changes += 1

    def stop(self) -> None:
        """Set ``run.stop_requested``: the training loop decides when to leave."""
        self._inbox.stop_requested = True


class AlertInbox:
    """Alerts received on the sender thread, delivered on the training thread."""

    def __init__(self, callback: AlertCallback, wake: Callable[[], None]) -> None:
        if not callable(callback):
            raise ValueError("on_alert must be a callable taking (alert, control)")
        self.callback, self._wake = callback, wake
        self._pending: collections.deque = collections.deque(maxlen=1000)
        self._lock = threading.Lock()
        self.stop_requested = False
        self.delivered = 0
        self.lr_changes = 0

    def receive(self, alert: dict) -> None:
        """Sender thread: keep the alert and have the next step be a full one."""
        with self._lock:
            self._pending.append(alert)
        self._wake()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def deliver(self, optimizer: Any) -> None:
        """Training thread: hand every pending alert to the callback; never raises."""
        control = AlertControl(self, optimizer)
        while True:
            with self._lock:
                if not self._pending:
                    return
                alert = self._pending.popleft()
            try:
                self.callback(alert, control)
                self.delivered += 1
            except Exception:
                log.warning("sentrycam: the on_alert callback raised; training continues",
                            exc_info=True)
