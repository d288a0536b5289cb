"""Errors raised by the store. Each message names the problem and what to do about it."""

from __future__ import annotations


class _KeyErrorWithText(KeyError):
    """A KeyError whose ``str()`` is its message as written (KeyError alone adds quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class UnknownRunError(_KeyErrorWithText):
    """No run with this ``run_id`` is stored."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"unknown run_id {run_id!r}; list runs with `sentrycam inspect` or the server's runs "
            "route (Store.run_summaries() in Python)")
        self.run_id = run_id


class MissingSnapshotError(_KeyErrorWithText):
    """The run exists, but holds no data for the requested step (and layer)."""

    def __init__(self, message: str, *, run_id: str, step: int, layer: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.step = step
        self.layer = layer


class UnknownAlertError(_KeyErrorWithText):
    """No alert with this ``alert_id`` is stored."""

    def __init__(self, alert_id: int) -> None:
        super().__init__(f"unknown alert_id {alert_id}; list alerts with `sentrycam alerts` or "
                         "the server's alerts route")
        self.alert_id = alert_id


class StoreLockedError(RuntimeError):
    """Another process holds the database file (DuckDB allows one read-write process)."""


class StoreVersionError(RuntimeError):
    """The file's schema is newer than this code, or too old to read without migrating."""


class StoreClosedError(RuntimeError):
    """The store was used after :meth:`Store.close`."""


class StoreReadOnlyError(RuntimeError):
    """A write was attempted on a store opened with ``read_only=True``."""


class StoreFormatError(ValueError):
    """The file is not a DuckDB database at all (a SQLite file, a text file...)."""


class StoreUnavailableError(RuntimeError):
    """The database cannot be written (or, after DuckDB invalidated it, read) right now: the
    disk is full, an I/O error, a file-size limit. The message names the cause. What was
    committed before stays; the server retries until a commit works again."""
