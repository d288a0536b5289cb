"""The interface between the capture agent and whatever carries its messages away.

The capture agent calls :meth:`Transport.send` from the training thread, so every
implementation must return at once and never raise. :class:`MemoryTransport` keeps messages
in a list, for tests of the agent itself and for offline use in one process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.messages import Message, per_step_scalars


@dataclass(frozen=True)
class TransportCounters:
    """Totals since the transport was created.

    ``dropped``: messages refused because the queue was full; ``spooled``: messages written to
    the disk spool; ``sent``: frames written to the server; ``acked``: messages the server
    committed; ``queue_depth``: messages waiting now; ``errors``: failures caught and logged;
    ``sender_cpu_seconds``: CPU time of the transport's own thread in the training process (it
    competes with training for cores and the GIL; 0.0 for a transport without one).
    """

    dropped: int = 0
    spooled: int = 0
    sent: int = 0
    acked: int = 0
    queue_depth: int = 0
    errors: int = 0
    sender_cpu_seconds: float = 0.0


@runtime_checkable
class Transport(Protocol):
    """Carries messages of one run. ``send`` never blocks and never raises."""

    def send(self, message: Message) -> bool:
        """Queue ``message``; False when it was dropped (queue full or transport closed)."""

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until every queued message is acknowledged or spooled."""

    def close(self, timeout: float = 10.0) -> None:
        """Flush, then stop background work. Idempotent."""

    def counters(self) -> TransportCounters:
        """A consistent copy of the counters."""


class MemoryTransport:
    """Keeps every message in ``self.messages`` (optionally bounded, dropping like the real one)."""

    def __init__(self, max_messages: int | None = None) -> None:
        self.messages: list[Message] = []
        self._max = max_messages
        self._dropped = 0
        self._closed = False
        self._lock = threading.Lock()

    def send(self, message: Message) -> bool:
        with self._lock:
            if self._closed or (self._max is not None and len(self.messages) >= self._max):
                self._dropped += 1
                return False
            self.messages.append(message)
            return True

    def flush(self, timeout: float) -> bool:
        return True

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True

    def counters(self) -> TransportCounters:
        with self._lock:
            return TransportCounters(dropped=self._dropped, sent=len(self.messages),
                                     acked=len(self.messages))

    def of_kind(self, kind: str) -> list[Message]:
        """The messages of one kind (``"scalars"``, ``"snapshot"``...), in send order; for
        ``"scalars"`` one Scalars per step, those sent in a ScalarSeries included."""
        with self._lock:
            if kind == ChangeKind.SCALARS:
                return [s for m in self.messages if m.change == kind
                        for s in per_step_scalars(m)]
            return [m for m in self.messages if m.kind == kind]
