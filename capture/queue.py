"""Bounded buffers and hand-offs between the training thread and the sender thread.

- :class:`BoundedQueue`: training thread -> sender thread. ``put`` never waits: when the
  queue is full (by item count or by approximate bytes) the item is refused and counted, so
  a slow or dead server can never stall training. The sender takes items out in batches.
- :class:`InFlightWindow`: the frames the sender has written but the server has not yet
  acknowledged, bounded by count and bytes.
- :class:`Progress`: sender thread -> whoever waits in ``flush``: how far delivery got.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Generic, NamedTuple, TypeVar

DEFAULT_MAX_ITEMS = 4096
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

#: Bytes charged per message on top of its arrays: the JSON header and Python objects.
MESSAGE_OVERHEAD_BYTES = 512

T = TypeVar("T")


def message_nbytes(message: Any) -> int:
    """Approximate memory held by a message: the ``nbytes`` of its arrays plus a fixed overhead.

    Reads the array fields a message class declares (``array_fields``, ``array_map_fields``);
    anything without ``nbytes`` counts as zero, so this never raises on odd input.
    """
    total = MESSAGE_OVERHEAD_BYTES
    for name in getattr(type(message), "array_fields", ()):
        total += int(getattr(getattr(message, name, None), "nbytes", 0) or 0)
    for name in getattr(type(message), "array_map_fields", ()):
        mapping = getattr(message, name, None) or {}
        for value in mapping.values():
            total += int(getattr(value, "nbytes", 0) or 0)
    return total


class BoundedQueue(Generic[T]):
    """FIFO bounded by item count and by a byte budget; ``put`` never blocks.

    The lock is held only for a few list operations, never across IO, so the producer
    cannot be held up by the consumer for longer than that.
    """

    def __init__(self, max_items: int = DEFAULT_MAX_ITEMS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: collections.deque[tuple[T, int]] = collections.deque()
        self._bytes = 0
        self._dropped = 0
        self._cond = threading.Condition(threading.Lock())

    def put(self, item: T, nbytes: int) -> bool:
        """Append ``item`` (charged ``nbytes``); False, counted as dropped, when it does not fit.

        An item larger than the whole byte budget never fits and is always refused.
        """
        return self.put_all([(item, nbytes)])

    def put_all(self, items: list[tuple[T, int]]) -> bool:
        """Append every ``(item, nbytes)`` or, when they do not all fit, none (one drop
        counted): the parts of one message go together or not at all."""
        total = sum(nbytes for _, nbytes in items)
        with self._cond:
            if (len(self._items) + len(items) > self.max_items
                    or self._bytes + total > self.max_bytes):
                self._dropped += 1
                return False
            self._items.extend(items)
            self._bytes += total
            self._cond.notify()
            return True

    def get_batch(self, max_items: int, timeout: float = 0.0) -> list[T]:
        """Take up to ``max_items`` items, oldest first, waiting up to ``timeout`` s for the first.

        Returns an empty list when nothing arrived in time or when :meth:`wake` was called.
        """
        with self._cond:
            if not self._items and timeout > 0:
                self._cond.wait(timeout)
            batch: list[T] = []
            while self._items and len(batch) < max_items:
                item, nbytes = self._items.popleft()
                self._bytes -= nbytes
                batch.append(item)
            return batch

    def wake(self) -> None:
        """Cut short a consumer waiting in :meth:`get_batch` (used for stop and flush requests)."""
        with self._cond:
            self._cond.notify_all()

    @property
    def depth(self) -> int:
        """Items waiting now."""
        with self._cond:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes charged for the items waiting now."""
        with self._cond:
            return self._bytes

    @property
    def dropped(self) -> int:
        """Items refused by :meth:`put` since creation."""
        with self._cond:
            return self._dropped


class Progress:
    """What the sender thread has settled, published for ``flush``.

    ``acked``: every seq <= it is acknowledged (or rejected) by the server. ``resolved``: what
    a flush may count as settled now: while connected, the acknowledged seq (spooled frames are
    being re-sent); while offline, every seq <= it is acknowledged or durably spooled (fsync'd).
    So ``resolved`` can move back when a connection comes up. Flush requests are numbered;
    ``answered`` is the last one the sender has dealt with: while connected at once, while
    offline only after one more attempt to reach the server, so that a flush delivers to a
    server that has come back instead of settling for the spool.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.acked = 0
        self.resolved = 0
        self.requested = 0
        self.answered = 0
        self.waiters = 0  # threads in :meth:`wait` now (a flush, a detach)

    def publish(self, acked: int, resolved: int, answered: int = 0) -> None:
        with self._cond:
            self.acked = max(self.acked, acked)
            self.resolved = max(resolved, self.acked)
            self.answered = max(self.answered, answered)
            self._cond.notify_all()

    def request_flush(self) -> int:
        """Number a new flush request; wait for it with ``wait(..., request=number)``."""
        with self._cond:
            self.requested += 1
            self._cond.notify_all()  # ends a :meth:`pause`
            return self.requested

    def pause(self, timeout: float, stop: threading.Event) -> None:
        """Wait up to ``timeout`` s, less when a flush request is or becomes unanswered or
        ``stop`` is or becomes set (whoever sets it calls :meth:`wake`)."""
        with self._cond:
            self._cond.wait_for(lambda: self.requested > self.answered or stop.is_set(),
                                timeout=timeout)

    def wake(self) -> None:
        """Have a :meth:`pause` look at its conditions again."""
        with self._cond:
            self._cond.notify_all()

    def awaited(self) -> bool:
        """True while some thread waits for acks in :meth:`wait`."""
        return self.waiters > 0

    def unanswered(self) -> int:
        """The newest flush request not dealt with yet, or 0 when there is none."""
        with self._cond:
            return self.requested if self.requested > self.answered else 0

    def wait(self, target: int, timeout: float, *, request: int = 0,
             acked_only: bool = False) -> bool:
        """Wait up to ``timeout`` s until ``target`` is resolved (or acked) and ``request`` answered."""
        def settled() -> bool:
            done = self.acked if acked_only else self.resolved
            return done >= target and self.answered >= request
        with self._cond:
            self.waiters += 1
            try:
                return self._cond.wait_for(settled, timeout=max(0.0, timeout))
            finally:
                self.waiters -= 1


class InFlight(NamedTuple):
    """One frame of the window: its bytes, whether the spool holds it, its run, and its seq in
    that run (see :mod:`sentrycam.capture.sequence`)."""

    frame: bytes
    spooled: bool
    run_id: str
    run_seq: int


class InFlightWindow:
    """Frames sent on the current connection and not yet acknowledged, in the transport's seq
    order.

    Each entry remembers whether its frame is already in the spool, so that a broken
    connection spools only the frames that are not, and its run and seq in that run, because
    the server acknowledges (and asks for) each run's seqs separately.
    """

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self.frames: collections.OrderedDict[int, InFlight] = collections.OrderedDict()
        self.nbytes = 0

    def room(self) -> int:
        """How many more frames may be sent now."""
        if self.nbytes >= self.max_bytes:
            return 0
        return max(0, self.max_frames - len(self.frames))

    def add(self, seq: int, frame: bytes, spooled: bool, run_id: str,
            run_seq: int | None = None) -> None:
        """Hold frame ``seq`` (the transport's); ``run_seq``: its seq in its run (default
        ``seq``)."""
        self.frames[seq] = InFlight(frame, spooled, run_id, seq if run_seq is None else run_seq)
        self.nbytes += len(frame)

    def release_through(self, seq: int, run_id: str | None = None) -> int:
        """Forget the frames of ``run_id`` (of every run if None) whose seq in their run is
        <= ``seq``; returns how many."""
        doomed = [held_seq for held_seq, entry in self.frames.items()
                  if entry.run_seq <= seq and (run_id is None or entry.run_id == run_id)]
        for held_seq in doomed:
            self.discard(held_seq)
        return len(doomed)

    def of_run(self, run_id: str) -> list[tuple[int, int, bytes]]:
        """``(seq, run_seq, frame)`` of every frame of ``run_id`` held, in seq order."""
        return [(seq, entry.run_seq, entry.frame) for seq, entry in self.frames.items()
                if entry.run_id == run_id]

    def discard(self, seq: int) -> None:
        entry = self.frames.pop(seq, None)
        if entry is not None:
            self.nbytes -= len(entry.frame)

    def min_seq(self) -> int:
        return next(iter(self.frames))

    def take_unspooled(self) -> list[tuple[int, bytes]]:
        """Empty the window; returns the frames that are not in the spool yet, in seq order."""
        out = [(seq, entry.frame) for seq, entry in self.frames.items() if not entry.spooled]
        self.frames.clear()
        self.nbytes = 0
        return out
