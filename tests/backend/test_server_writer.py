"""IngestWriter on a real store: batching, acks per run, failure isolation, draining on stop."""

from __future__ import annotations

import threading

import pytest

from sentrycam.backend.ingest import IngestWriter, WriterStopped
from sentrycam.protocol.messages import RunEnd, RunStart, Scalars

RUN = "writer-run"


class RecordingSink:
    """Collects what the writer reports to one connection (called from the writer thread)."""

    def __init__(self) -> None:
        self.acks: list[tuple[str, int]] = []
        self.errors: list[tuple[str, int, str]] = []
        self.asked: list[tuple[str, int, int]] = []  # (run, seq, the seq the run needs)
        self._lock = threading.Lock()

    def ack(self, run_id: str, seq: int) -> None:
        with self._lock:
            self.acks.append((run_id, seq))

    def error(self, run_id: str, seq: int, problem: str,
              expected_seq: int | None = None) -> None:
        with self._lock:
            self.errors.append((run_id, seq, problem))
            if expected_seq is not None:
                self.asked.append((run_id, seq, expected_seq))


@pytest.fixture
def writer(store):
    started = IngestWriter(store, queue_size=1000, batch_max=50, batch_wait_s=0.01)
    started.start()
    yield started
    started.stop(timeout=10)


def _submit(writer, sink, items) -> None:
    for seq, message in items:
        assert writer.try_submit(sink, seq, message)


def test_acks_name_the_highest_committed_seq_of_each_run(writer, store):
    sink = RecordingSink()
    items = [(0, RunStart(RUN, "a", 1.0)), (0, RunStart("other", "b", 1.0))]
    items += [(step + 1, Scalars(RUN, step, 1.0, {"loss": 1.0})) for step in range(20)]
    _submit(writer, sink, items)
    assert writer.wait_idle(10)
    assert max(seq for run, seq in sink.acks if run == RUN) == 20
    assert ("other", 0) in sink.acks
    assert store.scalars(RUN)["step"] == list(range(20))
    assert writer.stats()["committed"] == 22 and writer.stats()["queue_depth"] == 0


def test_a_message_the_store_refuses_costs_only_itself(writer, store):
    good, bad = RecordingSink(), RecordingSink()
    _submit(writer, good, [(0, RunStart(RUN, "a", 1.0)), (1, Scalars(RUN, 0, 1.0, {"loss": 1.0}))])
    # Wire validation would stop this status; handed in directly, the store refuses it.
    _submit(writer, bad, [(0, RunEnd("bad-run", 0, "exploded"))])
    _submit(writer, good, [(2, Scalars(RUN, 1, 1.0, {"loss": 0.5}))])
    assert writer.wait_idle(10)
    assert store.scalars(RUN)["step"] == [0, 1]
    assert max(seq for _, seq in good.acks) == 2 and good.errors == []
    [(run_id, seq, problem)] = bad.errors
    assert (run_id, seq) == ("bad-run", 0) and "exploded" in problem
    stats = writer.stats()
    assert stats["failed_messages"] == 1 and "exploded" in stats["last_error"]
    assert stats["running"]


def test_a_sink_that_raises_does_not_stop_the_writer(writer, store):
    class BrokenSink(RecordingSink):
        def ack(self, run_id, seq):
            raise RuntimeError("connection gone")

    _submit(writer, BrokenSink(), [(0, RunStart(RUN, "a", 1.0))])
    sink = RecordingSink()
    _submit(writer, sink, [(1, Scalars(RUN, 0, 1.0, {"loss": 1.0}))])
    assert writer.wait_idle(10)
    assert sink.acks == [(RUN, 1)]
    assert writer.stats()["sink_errors"] == 1


def test_stop_drains_the_queue_then_refuses_new_messages(store):
    writer = IngestWriter(store, queue_size=5000, batch_max=7, batch_wait_s=0.01)
    writer.start()
    sink = RecordingSink()
    _submit(writer, sink, [(0, RunStart(RUN, "a", 1.0))])
    _submit(writer, sink, [(s + 1, Scalars(RUN, s, 1.0, {"loss": 1.0})) for s in range(500)])
    writer.stop(timeout=30)
    assert store.scalars(RUN)["step"] == list(range(500))
    assert not writer.stats()["running"]
    with pytest.raises(WriterStopped, match="shutting down"):
        writer.try_submit(sink, 501, Scalars(RUN, 501, 1.0, {"loss": 1.0}))


def test_a_writer_not_started_refuses_and_bad_sizes_are_errors(store):
    writer = IngestWriter(store, queue_size=2)
    with pytest.raises(WriterStopped):
        writer.try_submit(RecordingSink(), 0, RunStart(RUN, "a", 1.0))
    with pytest.raises(ValueError, match="queue_size"):
        IngestWriter(store, queue_size=0)


def test_messages_out_of_order_are_refused_with_the_seq_needed_and_never_acked(writer, store):
    sink = RecordingSink()
    _submit(writer, sink, [(0, RunStart(RUN, "a", 1.0)), (2, Scalars(RUN, 1, 1.0, {"loss": 1.0})),
                           (3, Scalars(RUN, 2, 1.0, {"loss": 1.0}))])
    assert writer.wait_idle(10)
    assert sink.asked == [(RUN, 2, 1), (RUN, 3, 1)]
    assert max(seq for _, seq in sink.acks) == 0  # only RunStart is stored
    _submit(writer, sink, [(s + 1, Scalars(RUN, s, 1.0, {"loss": 1.0})) for s in range(3)])
    assert writer.wait_idle(10)
    assert store.scalars(RUN)["step"] == [0, 1, 2]
    assert max(seq for _, seq in sink.acks) == 3
    stats = writer.stats()
    assert stats["sequence_refused"] == 2 and stats["failed_messages"] == 0
