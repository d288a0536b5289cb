"""The change feed: how the parts of the server learn that something new is in the store.

Producers call :meth:`ChangeFeed.publish` right after their data is committed: the ingest
writer for every newly stored message (duplicates from a replay are not published), the
projector worker for embeddings and quality metrics, the audit engine for alerts. Consumers
(the projector worker, the audit engine, the push hub) :meth:`~ChangeFeed.subscribe` a
callback. Callbacks run on the producer's thread, so they must return at once: put the change
on a queue of their own, or hand it to an event loop with ``call_soon_threadsafe``. A callback
that raises is logged and counted; it never stops the producer or the other subscribers.

Kinds published (:class:`~sentrycam.protocol.changes.ChangeKind`): the ingest message kinds,
with ``message`` set to the stored :mod:`sentrycam.protocol.messages` dataclass, and the derived
kinds ``EMBEDDING``, ``QUALITY``, ``PROJECTOR`` (worker state) and ``ALERT`` (``message``
optional, producer-defined).
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sentrycam.protocol.changes import ChangeKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """One new thing in the store. ``step``/``layer`` are None where they do not apply."""

    run_id: str
    kind: ChangeKind
    step: int | None = None
    layer: str | None = None
    message: Any = None


Callback = Callable[[Sequence[Change]], None]


class Subscription:
    """Handle returned by :meth:`ChangeFeed.subscribe`; :meth:`close` stops the deliveries."""

    def __init__(self, feed: ChangeFeed, key: int, name: str) -> None:
        self._feed, self._key, self.name = feed, key, name

    def close(self) -> None:
        self._feed._unsubscribe(self._key)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ChangeFeed:
    """Thread-safe fan-out of :class:`Change` batches to subscribed callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[int, tuple[str, Callback]] = {}
        self._keys = itertools.count()
        self._counts = {"published": 0, "callback_errors": 0}

    def subscribe(self, callback: Callback, *, name: str = "subscriber") -> Subscription:
        """Deliver every later batch to ``callback(changes)`` (on the producer's thread)."""
        key = next(self._keys)
        with self._lock:
            self._subscribers[key] = (name, callback)
        return Subscription(self, key, name)

    def publish(self, changes: Sequence[Change]) -> None:
        """Hand ``changes`` (committed already) to every subscriber; never raises."""
        if not changes:
            return
        with self._lock:
            subscribers = list(self._subscribers.values())
            self._counts["published"] += len(changes)
        for name, callback in subscribers:
            try:
                callback(changes)
            except Exception:  # one broken consumer must not cost the others their data
                log.exception("change-feed subscriber %r failed", name)
                with self._lock:
                    self._counts["callback_errors"] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self._counts, "subscribers": sorted(n for n, _ in
                                                          self._subscribers.values())}

    def _unsubscribe(self, key: int) -> None:
        with self._lock:
            self._subscribers.pop(key, None)


def changes_of(messages: Sequence[Any]) -> list[Change]:
    """The :class:`Change` of each stored ingest message (``kind``/``step``/``layer`` read
    from the message where it has them)."""
    return [Change(run_id=m.run_id, kind=ChangeKind(m.change), step=getattr(m, "step", None),
                   layer=getattr(m, "layer", None), message=m) for m in messages]
