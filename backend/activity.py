"""When the server was last used: the idle shutdown's clock, fed by every request and websocket.

:class:`ActivityTracker` (ASGI middleware) counts each HTTP request and websocket in an
:class:`Activity`; the ingest route also touches it per frame; the idle shutdown of
:func:`~sentrycam.backend.server.run_server` reads :meth:`Activity.idle_for`.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class Activity:
    """When the server was last used, and how many requests/websockets are open (thread-safe).

    The idle shutdown of :func:`~sentrycam.backend.server.run_server` reads :meth:`idle_for`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self._last = time.monotonic()

    def touch(self) -> None:
        with self._lock:
            self._last = time.monotonic()

    def opened(self) -> None:
        with self._lock:
            self._open += 1
            self._last = time.monotonic()

    def closed(self) -> None:
        with self._lock:
            self._open -= 1
            self._last = time.monotonic()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return self._open

    def idle_for(self) -> float:
        """Seconds since the last activity; 0 while any request or websocket is open."""
        with self._lock:
            return 0.0 if self._open > 0 else time.monotonic() - self._last


class ActivityTracker:
    """ASGI middleware that records every HTTP request and websocket in an :class:`Activity`."""

    def __init__(self, app: Any, activity: Activity) -> None:
        self.app = app
        self.activity = activity

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        self.activity.opened()
        try:
            await self.app(scope, receive, send)
        finally:
            self.activity.closed()
