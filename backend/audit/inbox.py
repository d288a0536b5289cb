"""The audit's inbox: the committed batches of the change feed, waiting to be audited, and the
thread that empties it.

The feed calls :meth:`AuditInbox.on_changes` on the ingest writer's thread: it keeps the audited
kinds of the batch, queues them and returns at once (a full queue drops the batch, counted and
logged, never blocks ingest). The consumer (the engine's thread, or the dispatch thread of the
audit process) takes batches with :meth:`take` and reports each one audited with :meth:`done`,
which is what :meth:`wait_idle` waits for.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Sequence

from sentrycam.backend.feed import Change, ChangeFeed

log = logging.getLogger(__name__)


class AuditInbox:
    """A bounded queue of change batches, and the count of changes not yet audited."""

    def __init__(self, size: int, keep: Callable[[Sequence[Change]], list[Change]]) -> None:
        self._keep = keep  # the changes the audit reads, in order
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._settled = threading.Condition()
        self._pending = 0
        self.dropped = 0
        self._subscription: Any = None
        self._thread: threading.Thread | None = None

    def start(self, feed: ChangeFeed, consume: Callable[[], None], name: str) -> None:
        """Subscribe to ``feed`` and run ``consume`` (the loop that takes batches) on a thread
        called ``name``."""
        self._subscription = feed.subscribe(self.on_changes, name="audit")
        self._thread = threading.Thread(target=consume, name=name, daemon=True)
        self._thread.start()

    def stop(self, marker: Any, timeout: float) -> None:
        """Unsubscribe, queue ``marker`` (the consumer returns when it takes it) and wait up to
        ``timeout`` seconds for the consumer to finish what is queued."""
        if self._subscription is not None:
            self._subscription.close()
        if self._thread is not None:
            self.signal(marker)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the audit did not stop within %.0f s", timeout)

    def consuming(self) -> bool:
        """Whether the consumer thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def on_changes(self, changes: Sequence[Change]) -> None:
        """Feed callback (writer thread): queue the audited changes; drop when full."""
        wanted = self._keep(changes)
        if not wanted:
            return
        with self._settled:
            try:
                self._queue.put_nowait(wanted)
                self._pending += len(wanted)
            except queue.Full:
                self.dropped += len(wanted)
                log.warning("audit queue full: %d changes not audited", len(wanted))

    def signal(self, marker: Any) -> None:
        """Queue a marker of the consumer's (stop, wake up) behind the batches."""
        self._queue.put(marker)

    def take(self, timeout: float | None = None) -> Any:
        """The next batch or marker; raises :class:`queue.Empty` after ``timeout``."""
        return self._queue.get(timeout=timeout)

    def done(self, batch: Sequence[Change]) -> None:
        with self._settled:
            self._pending -= len(batch)
            self._settled.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once everything queued so far was audited (tests, benchmarks)."""
        with self._settled:
            return self._settled.wait_for(lambda: self._pending == 0, timeout)

    def size(self) -> int:
        return self._queue.qsize()
