"""A computation on a thread of its own whose result (or exception) is collected later."""

from __future__ import annotations

import threading
from typing import Any, Callable


class BackgroundTask:
    """Runs ``work()`` on a daemon thread named ``name`` at once; :meth:`result` waits for it
    and returns its value or raises its exception (in the caller's thread, every time)."""

    def __init__(self, work: Callable[[], Any], name: str) -> None:
        self._work = work
        self._value: Any = None
        self._error: BaseException | None = None
        # daemon: a process that exits mid-fit should not wait for a map nobody will see
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._work()
        except BaseException as exc:  # handed to whoever waits for the result
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float | None = None) -> Any:
        """The value of ``work()``; TimeoutError if it is still running after ``timeout`` s."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self._thread.name} still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value
