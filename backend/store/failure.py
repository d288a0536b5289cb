"""Storage failures: a failed statement or commit caused by the disk, not by the data.

DuckDB reports a full disk or an I/O error in two ways. A commit whose write-ahead log append
fails raises an error naming the file ("Could not write file ...: No space left on device");
the connection stays usable and every earlier commit stays. A failed checkpoint (writing the
log into the database file) raises ``duckdb.FatalException`` and *invalidates* the database:
every later statement on that connection fails until the file is opened again, which replays
the log, so nothing committed is lost. :func:`storage_failure` tells these apart from errors
of the data (a bad message, a constraint), which a retry cannot cure.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass, field, replace

import duckdb

from sentrycam.backend.store.errors import StoreUnavailableError

logger = logging.getLogger(__name__)

#: OS errors of the storage itself (a full disk, a quota, a file-size limit, a broken device).
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})
#: Lower-case phrases of DuckDB's messages that name the storage, not the statement.
STORAGE_PHRASES = ("no space left on device", "file too large", "disk quota exceeded",
                   "input/output error", "read-only file system", "could not write file",
                   "could not fsync", "could not truncate", "could not read from file",
                   "has been invalidated")
#: How much of DuckDB's message a reason keeps (it is shown on /health and the dashboard).
REASON_MAX_CHARS = 300


@dataclass(frozen=True)
class StorageFailure:
    """Why the store cannot commit. ``reopen``: DuckDB invalidated the database, so the file
    must be opened again before anything else works. ``since``: ``time.time()`` of the first
    failure of this episode."""

    reason: str
    reopen: bool
    since: float = field(default_factory=time.time)

    def again(self, later: StorageFailure) -> StorageFailure:
        """The same episode, failing again (``later``'s reason; reopen if either needs it)."""
        return StorageFailure(later.reason, self.reopen or later.reopen, self.since)


def storage_failure(exc: BaseException) -> StorageFailure | None:
    """The storage failure ``exc`` reports, or None when it is about the data or a bug."""
    text = " ".join(str(exc).split())
    lower = text.lower()
    if isinstance(exc, duckdb.FatalException) or "has been invalidated" in lower:
        return StorageFailure(_reason(exc, text), reopen=True)
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return StorageFailure(_reason(exc, text), reopen=False)
    if isinstance(exc, duckdb.IOException) or (
            isinstance(exc, duckdb.Error) and any(p in lower for p in STORAGE_PHRASES)):
        return StorageFailure(_reason(exc, text), reopen=False)
    return None


def _reason(exc: BaseException, text: str) -> str:
    reason = f"{type(exc).__name__}: {text}"
    return reason if len(reason) <= REASON_MAX_CHARS else reason[:REASON_MAX_CHARS - 3] + "..."


class FailureState:
    """The storage failure a store is in (``current``; None while commits work), with the
    log lines that mark its start and end. Updated by the store's threads without a lock: a
    stale read only delays a retry."""

    def __init__(self, path: object) -> None:
        self.path = path
        self.current: StorageFailure | None = None

    def note(self, failure: StorageFailure) -> StoreUnavailableError:
        """Remember ``failure`` (as part of the episode under way); returns the error to raise."""
        previous = self.current
        self.current = failure if previous is None else previous.again(failure)
        if previous is None:
            logger.error("store %s cannot be written: %s", self.path, failure.reason)
        return self.error()

    def error(self) -> StoreUnavailableError:
        reason = self.current.reason if self.current else "storage failure"
        return StoreUnavailableError(f"the store {self.path} cannot be written now ({reason}); "
                                     "the server retries until storage works again")

    def reopened(self) -> None:
        """The file was opened again: what fails next is a new problem, not the invalidation."""
        if self.current is not None:
            self.current = replace(self.current, reopen=False)

    def end(self) -> None:
        """A commit worked: the episode is over."""
        if self.current is not None:
            logger.warning("store %s can be written again (it failed for %.1f s)", self.path,
                           time.time() - self.current.since)
            self.current = None
