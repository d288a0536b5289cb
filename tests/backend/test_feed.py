"""The change feed: the ingest writer announces exactly the newly stored messages."""

from __future__ import annotations

import threading

from sentrycam.backend.feed import ChangeFeed
from sentrycam.backend.ingest import IngestWriter
from sentrycam.protocol.messages import RunStart, Scalars

RUN = "feed-run"


class _Sink:
    def ack(self, run_id: str, seq: int) -> None:
        pass

    def error(self, run_id: str, seq: int, problem: str) -> None:
        pass


def _collect(feed: ChangeFeed) -> list:
    seen: list = []
    lock = threading.Lock()

    def on_changes(changes) -> None:
        with lock:
            seen.extend(changes)

    feed.subscribe(on_changes, name="test")
    return seen


def test_stored_messages_are_published_once_and_replays_are_not(store):
    feed = ChangeFeed()
    seen = _collect(feed)
    writer = IngestWriter(store, batch_wait_s=0.01, feed=feed)
    writer.start()
    try:
        sink = _Sink()
        items = [(0, RunStart(RUN, "a", 1.0))]
        items += [(s + 1, Scalars(RUN, s, 1.0, {"loss": 1.0 / (s + 1)})) for s in range(5)]
        for seq, message in items + items[2:]:  # the tail again: a replay after a reconnect
            assert writer.try_submit(sink, seq, message)
        assert writer.wait_idle(10)
    finally:
        writer.stop(10)
    assert [(c.kind, c.step) for c in seen] == [("run_start", None)] + [
        ("scalars", s) for s in range(5)]
    assert seen[-1].message.values == {"loss": 0.2}


def test_a_failing_subscriber_costs_nobody_else():
    feed = ChangeFeed()

    def broken(changes) -> None:
        raise RuntimeError("consumer bug")

    feed.subscribe(broken, name="broken")
    seen = _collect(feed)
    feed.publish([object()])  # any payload: the feed does not look inside
    assert len(seen) == 1 and feed.stats()["callback_errors"] == 1
    subscription = feed.subscribe(lambda changes: seen.extend(changes), name="temporary")
    subscription.close()
    feed.publish([object()])
    assert len(seen) == 2
