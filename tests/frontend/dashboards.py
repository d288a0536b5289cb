"""Helpers of the dashboard tests."""

from __future__ import annotations

import time
from typing import Callable

from sentrycam.frontend.run_view import RunDashboard


def drain_until(dashboard: RunDashboard, condition: Callable[[], bool],
                timeout: float = 20.0) -> None:
    """Apply the dashboard's pushed frames until ``condition()`` holds (fail after timeout)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the dashboard did not receive the data in time"
        dashboard.drain()
        time.sleep(0.05)
