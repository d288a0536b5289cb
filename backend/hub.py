"""The push hub: what the store receives goes out, per run, to every dashboard subscribed to it.

Three hops, so that nothing ever waits on a dashboard:

1. The change feed calls :meth:`PushHub._on_changes` on the ingest writer's thread. It keeps
   the changes of watched runs on a bounded inbox and returns at once (a full inbox drops the
   oldest batch and counts it); unwatched runs cost a set lookup.
2. The hub's worker thread turns each batch into push frames (:mod:`sentrycam.protocol.push`)
   with :class:`FrameBuilder`, once per run whatever the number of subscribers, reading
   derived data back from the store.
3. On the event loop, each frame is appended to every subscriber's bounded buffer; a
   subscriber that reads too slowly loses its oldest frames, counted and reported to it.

A new subscriber first receives the catch-up (the whole stored run), then the live frames
that arrived meanwhile. Frames may repeat what the catch-up already held: clients apply them
idempotently (rows are keyed by step, maps by (layer, step)).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from typing import Any, Sequence

from sentrycam.backend.feed import Change, ChangeFeed
from sentrycam.backend.push_frames import FrameBuilder, dropped_frame
from sentrycam.backend.store import Store

log = logging.getLogger(__name__)

#: Per subscriber: frames and bytes buffered before the oldest are dropped.
CLIENT_MAX_FRAMES = 512
CLIENT_MAX_BYTES = 64 * 1024 * 1024
#: Change batches waiting for the worker before the oldest are dropped.
INBOX_MAX_BATCHES = 10_000


class Subscriber:
    """One websocket's bounded queue of frames (used on the event loop only)."""

    def __init__(self, run_id: str, max_frames: int, max_bytes: int) -> None:
        self.run_id = run_id
        self._frames: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._max_frames, self._max_bytes = max_frames, max_bytes
        self._ready = asyncio.Event()
        self.dropped = 0
        self.sent = 0
        self.bytes_sent = 0

    def push(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._bytes += len(frame)
        while len(self._frames) > 1 and (len(self._frames) > self._max_frames
                                         or self._bytes > self._max_bytes):
            self._bytes -= len(self._frames.popleft())
            self.dropped += 1
        self._ready.set()

    async def next_frames(self) -> list[bytes]:
        """Wait for frames, then take all of them."""
        await self._ready.wait()
        self._ready.clear()
        frames, self._frames, self._bytes = list(self._frames), collections.deque(), 0
        return frames


class PushHub:
    """Fans stored changes out to websocket subscribers. :meth:`start` on the event loop,
    :meth:`stop` at shutdown; :meth:`serve` runs one subscription."""

    def __init__(self, store: Store, feed: ChangeFeed, *, max_frames: int = CLIENT_MAX_FRAMES,
                 max_bytes: int = CLIENT_MAX_BYTES) -> None:
        self.builder = FrameBuilder(store)
        self._feed = feed
        self._max_frames, self._max_bytes = max_frames, max_bytes
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._watched: frozenset[str] = frozenset()  # read by the writer thread, swapped whole
        self._inbox: collections.deque[list[Change]] = collections.deque()
        self._wake = threading.Condition()
        self._counts = collections.Counter()
        self._inbox_dropped_seen = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._subscription = None
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="sentrycam-push-hub", daemon=True)
        self._thread.start()
        self._subscription = self._feed.subscribe(self._on_changes, name="push-hub")

    def stop(self, timeout: float = 10.0) -> None:
        if self._subscription is not None:
            self._subscription.close()
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        subscribers = [s for group in self._subscribers.values() for s in group]
        return {**self._counts, "subscribers": len(subscribers),
                "client_dropped": sum(s.dropped for s in subscribers),
                "inbox": len(self._inbox)}

    # ------------------------------------------------------------------ writer thread
    def _on_changes(self, changes: Sequence[Change]) -> None:
        watched = self._watched
        relevant = [c for c in changes if c.run_id in watched]
        if not relevant:
            return
        with self._wake:
            self._inbox.append(relevant)
            if len(self._inbox) > INBOX_MAX_BATCHES:
                self._inbox.popleft()
                self._counts["inbox_dropped"] += 1
            self._wake.notify()

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._inbox and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                batches, self._inbox = list(self._inbox), collections.deque()
                dropped = self._counts["inbox_dropped"]
            if dropped != self._inbox_dropped_seen:  # the builder's live state missed some
                self._inbox_dropped_seen = dropped
                self.builder.forget_steps()
            try:
                self._publish(batches)
            except Exception:  # a bad batch must not end the live view for everyone
                log.exception("push hub could not build frames; carrying on")
                self._counts["build_errors"] += 1

    def _publish(self, batches: list[list[Change]]) -> None:
        by_run: dict[str, list[Change]] = {}
        for batch in batches:
            for change in batch:
                by_run.setdefault(change.run_id, []).append(change)
        for run_id, changes in by_run.items():
            frames = self.builder.live(run_id, changes)
            if frames and self._loop is not None and not self._loop.is_closed():
                self._counts["frames_built"] += len(frames)
                self._loop.call_soon_threadsafe(self._deliver, run_id, frames)

    # ------------------------------------------------------------------ event loop
    def _deliver(self, run_id: str, frames: list[bytes]) -> None:
        for subscriber in self._subscribers.get(run_id, ()):
            for frame in frames:
                subscriber.push(frame)

    def _add(self, subscriber: Subscriber) -> None:
        self._subscribers.setdefault(subscriber.run_id, set()).add(subscriber)
        self._watched = frozenset(self._subscribers)

    def _remove(self, subscriber: Subscriber) -> None:
        group = self._subscribers.get(subscriber.run_id, set())
        group.discard(subscriber)
        if not group:
            self._subscribers.pop(subscriber.run_id, None)
        self._watched = frozenset(self._subscribers)

    async def serve(self, run_id: str, send_bytes: Any) -> None:
        """Run one subscription until ``send_bytes`` raises (the client went away) or the
        task is cancelled: the catch-up first, then live frames as they come."""
        subscriber = Subscriber(run_id, self._max_frames, self._max_bytes)
        self._add(subscriber)  # before reading the catch-up, so nothing falls in between
        try:
            for frame in await asyncio.to_thread(self.builder.catch_up, run_id):
                await send_bytes(frame)
            reported = 0
            while True:
                frames = await subscriber.next_frames()
                if subscriber.dropped != reported:
                    reported = subscriber.dropped
                    await send_bytes(dropped_frame(run_id, reported))
                for frame in frames:
                    await send_bytes(frame)
                    subscriber.sent += 1
                    subscriber.bytes_sent += len(frame)
        finally:
            self._remove(subscriber)
