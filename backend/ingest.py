"""The one thread that writes ingested messages to the store.

Websocket handlers validate frames on the event loop and hand ``(sink, seq, message)`` to
:class:`IngestWriter` with :meth:`IngestWriter.try_submit`, which never blocks: when the queue
is full, or the frames it holds already add up to ``max_bytes``, it returns False and the
handler awaits a little before trying again (it reads no further frame meanwhile, so the
backpressure reaches the client through the websocket's flow control; nothing is dropped).
The writer thread takes up to ``batch_max`` messages (or whatever arrived within
``batch_wait_s``), commits them with one ``store.write`` call, and tells each sink the highest
committed ``seq`` of each of its runs.

The store applies the sequence rules (:func:`sentrycam.backend.store.writer.order_refusal`):
a run's messages are stored only in order from its last stored seq, and a finished run takes
nothing new. A message out of order is answered with an error naming the seq the run needs
next, so that the client resends from there; an ack only ever names a seq up to which every
message of the run is stored.

When a batch fails because of its data, the writer retries its messages one by one so that
one bad message does not cost the others, and reports each failure to its sink as an error.
When it fails because of the storage (a full disk, an I/O error, DuckDB invalidating the
database: :class:`~sentrycam.backend.store.StoreUnavailableError`), no message is at fault:
each is answered with a *retryable* error (never an ack), and the client keeps it and sends
it again. Until storage works, messages are answered so at once, and every ``retry_s`` (doubling
from :data:`RETRY_MIN_S` up to :data:`RETRY_MAX_S`) the writer tries again: it reopens and
checks the store (:meth:`~sentrycam.backend.store.Store.recover`), then writes the batch at
hand, if any. The store's ``failure`` is what ``/health`` reports.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from sentrycam.backend.feed import ChangeFeed, changes_of
from sentrycam.backend.store.errors import StoreUnavailableError
from sentrycam.backend.store.writer import Refusal
from sentrycam.protocol.messages import Message

log = logging.getLogger(__name__)

#: Seconds between attempts to write again after a storage failure: the first wait, and the
#: most it grows to (doubling on each failed attempt).
RETRY_MIN_S = 0.5
RETRY_MAX_S = 8.0


class AckSink(Protocol):
    """Receives the outcome of submitted messages. Called from the writer thread; must not block."""

    def ack(self, run_id: str, seq: int) -> None:
        """Every message of ``run_id`` up to ``seq`` from this sink is committed."""

    def error(self, run_id: str, seq: int, problem: str,
              expected_seq: int | None = None, retry: bool = False) -> None:
        """The message ``seq`` of ``run_id`` was not stored. ``expected_seq``: it was out of
        order, and the run needs that seq next. ``retry``: storage failed, not the message:
        it is to be sent again later."""


class WriterStopped(RuntimeError):
    """The writer no longer accepts messages (the server is shutting down)."""


@dataclass(frozen=True)
class _Item:
    sink: AckSink
    seq: int
    message: Message
    nbytes: int = 0  # the frame's size, held until the item is written
    checked: bool = False  # parse_frame returned it: the store need not check it again


class IngestWriter:
    """Owns every write to ``store``: a bounded queue and one background thread.

    ``store`` needs ``write(batch: Sequence[tuple[int, Message]], *, stored: list | None,
    refused: list, checked: bool) -> dict[str, int]``
    (:meth:`sentrycam.backend.store.Store.write`), and
    ``failure`` and ``recover()`` for storage failures; with a ``feed``, newly stored messages
    are published there after each commit.
    ``max_bytes`` (None: no bound) bounds the frame bytes submitted and not yet written, over
    every connection (one frame is always taken, however large).
    """

    def __init__(self, store: Any, *, queue_size: int = 10_000, batch_max: int = 500,
                 batch_wait_s: float = 0.02, feed: ChangeFeed | None = None,
                 max_bytes: int | None = None) -> None:
        if queue_size < 1 or batch_max < 1 or batch_wait_s <= 0 or (max_bytes or 1) < 1:
            raise ValueError("queue_size, batch_max and max_bytes must be >= 1 and "
                             "batch_wait_s > 0")
        self._store = store
        self._feed = feed
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_size)
        self._batch_max = batch_max
        self._batch_wait_s = batch_wait_s
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._counts = {"queued": 0, "committed": 0, "batches": 0, "failed_batches": 0,
                        "failed_messages": 0, "rejected": 0, "sink_errors": 0,
                        "queue_full": 0, "bytes_full": 0, "sequence_refused": 0,
                        "retry_later": 0}
        self._in_flight = 0
        self._max_bytes, self._in_flight_bytes = max_bytes, 0
        self._last_error: str | None = None
        self._retry_s = 0.0  # the wait after the last failed attempt (0: storage works)
        self._retry_at = 0.0  # time.monotonic() of the next attempt during a storage failure
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sentrycam-ingest-writer",
                                        daemon=True)
        self._started = False

    # ---- producer side (event loop) -------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            raise RuntimeError("IngestWriter.start() called twice")
        self._started = True
        self._thread.start()

    def try_submit(self, sink: AckSink, seq: int, message: Message, nbytes: int = 0,
                   checked: bool = False) -> bool:
        """Queue one message (its frame ``nbytes`` long) without blocking. False when the queue
        is full or holds ``max_bytes`` of frames already (try again later). ``checked``: the
        message is what :func:`~sentrycam.protocol.validation.parse_frame` returned, so the
        store skips its own (laxer) check of it.

        Raises :class:`WriterStopped` once :meth:`stop` has been called.
        """
        if self._stopping.is_set() or not self._started:
            raise WriterStopped("the ingest writer is not running (not started, or the server is "
                                "shutting down)")
        with self._lock:
            if (self._max_bytes is not None and self._in_flight_bytes
                    and self._in_flight_bytes + nbytes > self._max_bytes):
                self._counts["bytes_full"] += 1
                return False
            try:
                self._queue.put_nowait(_Item(sink, seq, message, nbytes, checked))
            except queue.Full:
                self._counts["queue_full"] += 1
                return False
            self._counts["queued"] += 1
            self._in_flight += 1
            self._in_flight_bytes += nbytes
        return True

    def count_rejected(self) -> None:
        """Count a frame that failed validation (for ``stats()``)."""
        with self._lock:
            self._counts["rejected"] += 1

    def stats(self) -> dict[str, Any]:
        """Counters since start, plus the queue depth and the last store error (if any)."""
        with self._lock:
            return {**self._counts, "queue_depth": self._queue.qsize(),
                    "in_flight_bytes": self._in_flight_bytes,
                    "queue_capacity": self._queue.maxsize, "last_error": self._last_error,
                    "running": self._thread.is_alive()}

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every submitted message is written (or failed). True if that happened."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new messages, write what is queued, then stop the thread (idempotent)."""
        self._stopping.set()
        if self._started and self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("ingest writer did not drain within %.1f s; %d messages left unwritten",
                          timeout, self._queue.qsize())

    # ---- writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                if batch:
                    self._take(batch)
                elif self._stopping.is_set():
                    return
                elif self._storage_failed() and self._retry_due():
                    self._recover()  # nobody waits, but /health should say when it works
            except Exception:  # never let the thread die: count, log, carry on
                log.exception("unexpected failure in the ingest writer")
                self._note_failure("unexpected writer failure; see the server log")
            finally:
                if batch:
                    self._done(batch)

    def _take(self, batch: list[_Item]) -> None:
        """Write a batch, or during a storage failure answer it "retry later" until the next
        attempt is due."""
        if self._storage_failed() and (not self._retry_due() or not self._recover()):
            self._answer_retry(batch, self._store.failure)
            return
        self._write(batch)

    # ---- storage failures -----------------------------------------------------------------------

    def _storage_failed(self) -> bool:
        return self._store.failure is not None

    def _retry_due(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _recover(self) -> bool:
        """Try the store again (reopen and check); schedule the next try when it still fails."""
        if self._store.recover():
            self._retry_s = 0.0
            return True
        self._schedule_retry()
        return False

    def _schedule_retry(self) -> None:
        self._retry_s = min(max(2 * self._retry_s, RETRY_MIN_S), RETRY_MAX_S)
        self._retry_at = time.monotonic() + self._retry_s

    def _answer_retry(self, items: Sequence[_Item], failure: Any) -> None:
        """Tell each sender that storage failed, not its message: it keeps it and resends."""
        reason = getattr(failure, "reason", None) or "storage failure"
        self._note_failure(f"storage failure: {reason}")
        with self._lock:
            self._counts["retry_later"] += len(items)
        for item in items:
            self._notify(item.sink.error, item.message.run_id, item.seq,
                         f"the server cannot store messages now ({reason}); nothing of seq "
                         f"{item.seq} was stored: send it again later", None, True)

    def _next_batch(self) -> list[_Item]:
        """Up to ``batch_max`` items: waits for the first, then ``batch_wait_s`` for others
        to join it (not when a whole batch is queued already)."""
        try:
            first = self._queue.get(timeout=min(self._batch_wait_s * 5, 0.1))
        except queue.Empty:
            return []
        if self._queue.qsize() + 1 < self._batch_max and not self._stopping.is_set():
            # Sleep rather than wait on the queue: a waiting thread is woken (and takes the
            # GIL from the event loop) for every message put meanwhile.
            time.sleep(self._batch_wait_s)
        batch = [first]
        while len(batch) < self._batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[_Item]) -> None:
        refused: list[Refusal] = []
        try:
            committed = self._store_write(batch, refused)
        except StoreUnavailableError:
            self._schedule_retry()
            self._answer_retry(batch, self._store.failure)
            return
        except Exception as exc:
            log.warning("store write of %d messages failed (%s); retrying them one by one",
                        len(batch), exc)
            self._note_failure(f"{type(exc).__name__}: {exc}", batch=True)
            self._write_one_by_one(batch)
            return
        with self._lock:
            self._counts["committed"] += len(batch) - len(refused)
            self._counts["batches"] += 1
        self._acknowledge(batch, committed or {})
        self._report_refused(batch, refused)

    def _store_write(self, items: Sequence[_Item], refused: list[Refusal]) -> dict[str, int]:
        stored: list[Message] | None = None if self._feed is None else []
        committed = self._store.write([(item.seq, item.message) for item in items],
                                      stored=stored, refused=refused,
                                      checked=all(item.checked for item in items))
        if self._feed is not None:
            self._feed.publish(changes_of(stored))
        return committed

    def _report_refused(self, batch: Sequence[_Item], refused: Sequence[Refusal]) -> None:
        """Tell the sender of each message the sequence rules refused why (and, for one out
        of order, which seq its run needs next)."""
        if not refused:
            return
        with self._lock:
            self._counts["sequence_refused"] += len(refused)
        for refusal in refused:
            log.debug("refused %s", refusal.problem)
            self._notify(batch[refusal.index].sink.error, refusal.run_id, refusal.seq,
                         refusal.problem, refusal.expected_seq)

    def _write_one_by_one(self, batch: list[_Item]) -> None:
        for index, item in enumerate(batch):
            refused: list[Refusal] = []
            try:
                committed = self._store_write([item], refused)
            except StoreUnavailableError:
                self._schedule_retry()
                self._answer_retry(batch[index:], self._store.failure)
                return
            except Exception as exc:
                problem = f"could not store {item.message.kind} seq {item.seq}: {exc}"
                log.warning("%s", problem)
                self._note_failure(problem, messages=1)
                self._notify(item.sink.error, item.message.run_id, item.seq, problem)
                continue
            with self._lock:
                self._counts["committed"] += 1 - len(refused)
            self._acknowledge([item], committed or {})
            self._report_refused([item], refused)

    def _acknowledge(self, items: Sequence[_Item], committed: dict[str, int]) -> None:
        """Tell each sink, per run, the store's highest committed seq: every message of the
        run up to it is stored (duplicates of stored messages included), nothing unstored is
        covered. A run with nothing stored yet gets no ack."""
        sinks: dict[tuple[int, str], AckSink] = {}
        for item in items:
            sinks.setdefault((id(item.sink), item.message.run_id), item.sink)
        for (_, run_id), sink in sinks.items():
            seq = committed.get(run_id, -1)
            if seq >= 0:
                self._notify(sink.ack, run_id, seq)

    def _notify(self, callback: Any, *args: Any) -> None:
        try:
            callback(*args)
        except Exception:  # a sink belongs to a connection that may be gone
            log.debug("ack sink failed", exc_info=True)
            with self._lock:
                self._counts["sink_errors"] += 1

    def _note_failure(self, problem: str, *, batch: bool = False, messages: int = 0) -> None:
        with self._lock:
            self._last_error = problem
            self._counts["failed_batches"] += int(batch)
            self._counts["failed_messages"] += messages

    def _done(self, batch: Sequence[_Item]) -> None:
        with self._idle:
            self._in_flight -= len(batch)
            self._in_flight_bytes -= sum(item.nbytes for item in batch)
            if self._in_flight == 0:
                self._idle.notify_all()

