"""Counters and a rate-limited warning log shared by the transport and its sender thread."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any


class LogLimiter:
    """Logs a warning per key at most once per ``interval`` s, then says how many were held back."""

    def __init__(self, log: logging.Logger, interval: float = 30.0) -> None:
        self._log, self._interval = log, interval
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] += 1
                return
            self._last[key] = now
            held_back = self._suppressed.pop(key, 0)
        if held_back:
            msg, args = msg + " (%d similar warnings held back)", (*args, held_back)
        self._log.warning(msg, *args, exc_info=exc_info)


class Counters:
    """Totals shared by both threads; each update holds the lock for one addition."""

    NAMES = ("dropped", "spooled", "sent", "acked", "errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.NAMES, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)
