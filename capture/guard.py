"""Failure containment shared by every capture hook: the first exception disables capture."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("sentrycam.capture.run")


class Guard:
    """Counts hook errors; the first one logs a warning, sets ``disabled`` (which every hook
    checks first) and calls ``on_fail(where, exc)``."""

    def __init__(self) -> None:
        self.disabled = False
        self.errors = 0
        self.on_fail: Any = None

    def fail(self, where: str, exc: BaseException) -> None:
        self.errors += 1
        if self.disabled:
            return
        self.disabled = True
        log.warning("sentrycam capture is disabled after an error in %s; training continues "
                    "unwatched", where, exc_info=(type(exc), exc, exc.__traceback__))
        if self.on_fail is not None:
            try:
                self.on_fail(where, exc)
            except Exception:  # reporting the failure must not fail in turn
                log.debug("could not report the capture failure", exc_info=True)
