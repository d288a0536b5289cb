"""The bounded queue, the in-flight window and the progress hand-off of the transport."""

import threading

import numpy as np
import pytest

from sentrycam.protocol.messages import Scalars, Snapshot
from sentrycam.capture.queue import (MESSAGE_OVERHEAD_BYTES, BoundedQueue, InFlightWindow, Progress,
                                     message_nbytes)


def _snapshot(n: int, dim: int) -> Snapshot:
    rng = np.random.default_rng(0)
    return Snapshot(run_id="r", step=0, epoch=0, sample_ids=np.arange(n, dtype=np.int64),
                    outputs={"pred": np.zeros(n, dtype=np.int64)},
                    features={"fc:input": rng.standard_normal((n, dim)).astype(np.float16)})


def test_message_size_counts_every_array_of_a_snapshot():
    snap = _snapshot(100, 64)
    expected = 100 * 8 + 100 * 8 + 100 * 64 * 2 + MESSAGE_OVERHEAD_BYTES
    assert message_nbytes(snap) == expected
    assert message_nbytes(Scalars("r", 1, 0.0, {"loss": 1.0})) == MESSAGE_OVERHEAD_BYTES


def test_full_queue_by_count_refuses_and_counts_without_losing_what_it_holds():
    q = BoundedQueue(max_items=3, max_bytes=10_000)
    assert [q.put(i, 10) for i in range(5)] == [True, True, True, False, False]
    assert q.dropped == 2 and q.depth == 3
    assert q.get_batch(10) == [0, 1, 2]
    assert q.put(99, 10) and q.get_batch(10) == [99]


def test_full_queue_by_bytes_refuses_big_items_but_takes_small_ones():
    q = BoundedQueue(max_items=100, max_bytes=1000)
    assert q.put("a", 600)
    assert not q.put("b", 600)
    assert q.put("c", 400)
    assert not q.put("too big ever", 5000)
    assert q.nbytes == 1000 and q.dropped == 2
    assert q.get_batch(1) == ["a"] and q.nbytes == 400


def test_get_batch_is_fifo_limited_and_returns_empty_after_timeout_or_wake():
    q = BoundedQueue()
    for i in range(10):
        q.put(i, 1)
    assert q.get_batch(4) == [0, 1, 2, 3]
    assert q.get_batch(100) == [4, 5, 6, 7, 8, 9]
    assert q.get_batch(5, timeout=0.01) == []
    waker = threading.Timer(0.05, q.wake)
    waker.start()
    assert q.get_batch(5, timeout=30.0) == []  # returns at the wake, not after 30 s
    waker.join()


def test_a_consumer_waiting_gets_an_item_put_from_another_thread():
    q = BoundedQueue()
    threading.Timer(0.05, q.put, args=("x", 1)).start()
    assert q.get_batch(5, timeout=30.0) == ["x"]


def test_queue_rejects_nonsense_bounds():
    with pytest.raises(ValueError, match="max_items"):
        BoundedQueue(max_items=0)
    with pytest.raises(ValueError, match="max_bytes"):
        BoundedQueue(max_bytes=0)


def test_window_bounds_frames_and_bytes():
    w = InFlightWindow(max_frames=3, max_bytes=50)
    assert w.room() == 3
    w.add(1, b"x" * 10, spooled=False, run_id="r")
    w.add(2, b"x" * 10, spooled=False, run_id="r")
    assert w.room() == 1
    w.add(3, b"x" * 90, spooled=False, run_id="r")
    assert w.room() == 0
    assert w.release_through(2) == 2 and w.room() == 0  # bytes still over the limit
    assert w.release_through(3) == 1 and w.room() == 3 and w.nbytes == 0


def test_window_releases_in_order_discards_rejected_and_hands_back_only_unspooled():
    w = InFlightWindow(max_frames=10, max_bytes=10_000)
    for seq in (4, 5, 6, 7):
        w.add(seq, bytes([seq]), spooled=seq < 6, run_id="r")
    assert w.release_through(3) == 0
    assert w.min_seq() == 4
    w.discard(4)
    assert w.min_seq() == 5
    assert w.take_unspooled() == [(6, b"\x06"), (7, b"\x07")]
    assert not w.frames and w.nbytes == 0


def test_window_releases_per_run_when_the_ack_names_one():
    w = InFlightWindow(max_frames=10, max_bytes=10_000)
    for seq, run in [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a")]:
        w.add(seq, b"x", spooled=False, run_id=run)
    assert w.release_through(4, run_id="a") == 2  # 1 and 3; 5 is past the ack
    assert list(w.frames) == [2, 4, 5] and w.min_seq() == 2 and w.nbytes == 3
    assert w.release_through(4) == 2  # an ack without a run covers every run
    assert list(w.frames) == [5]


def test_progress_wait_returns_when_published_and_acked_only_ignores_spooled():
    p = Progress()
    p.publish(acked=2, resolved=5)
    assert p.wait(5, timeout=0.0)
    assert not p.wait(5, timeout=0.0, acked_only=True)
    threading.Timer(0.05, p.publish, kwargs={"acked": 5, "resolved": 5}).start()
    assert p.wait(5, timeout=30.0, acked_only=True)


def test_resolved_falls_back_to_acked_when_a_connection_comes_up():
    p = Progress()
    p.publish(acked=2, resolved=9)  # offline: 3..9 are in the spool
    p.publish(acked=2, resolved=2)  # online again: the spool is being re-sent
    assert not p.wait(9, timeout=0.0)
    assert p.acked == 2 and p.resolved == 2


def test_a_flush_request_waits_for_its_answer_even_when_already_resolved():
    p = Progress()
    p.publish(acked=0, resolved=5)
    assert p.unanswered() == 0
    first = p.request_flush()
    second = p.request_flush()
    assert p.unanswered() == second
    assert not p.wait(5, timeout=0.0, request=first)
    p.publish(acked=0, resolved=5, answered=first)
    assert p.wait(5, timeout=0.0, request=first) and p.unanswered() == second
    threading.Timer(0.05, p.publish, kwargs={"acked": 0, "resolved": 5, "answered": second}).start()
    assert p.wait(5, timeout=30.0, request=second) and p.unanswered() == 0


@pytest.mark.parametrize("end", ["flush", "stop"])
def test_a_linger_ends_at_a_flush_request_or_a_stop(end):
    p, stop = Progress(), threading.Event()
    pauser = threading.Thread(target=p.pause, args=(60.0, stop))
    pauser.start()
    if end == "flush":
        p.request_flush()
    else:
        stop.set()
        p.wake()
    pauser.join(30.0)  # far less than the pause asked for: only an ended pause returns
    assert not pauser.is_alive()
