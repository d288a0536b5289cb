"""The audit engine in its own process: off the server's GIL and off the ingest path.

:class:`AuditProcess` has the interface of :class:`~sentrycam.backend.audit.engine.AuditEngine`
(``start``, ``stop``, ``wait_idle``, ``run_status``, ``stats``) and runs that engine in a
``spawn``-started child process (the server holds DuckDB, threads and sockets that a forked
child must not inherit). The server stays the only process that opens the database:

- The change-feed callback (on the ingest writer's thread) only queues the audited changes of
  each committed batch and returns. A dispatch thread sends each batch over a pipe and waits
  until the child has audited it; meanwhile it serves the child's calls on the store (the
  reads of :data:`STORE_CALLS`, and ``upsert_alert``, the one write) and publishes the alerts
  the child announces on the server's feed (push hub, relay to trainers, webhook).
- A child that dies is started again (``restarts`` in :meth:`AuditProcess.stats`, a warning
  in the log). The changes it was auditing are counted in ``unaudited``; the new child meets
  each run mid-way and first replays what the store holds of it (``RunAudit.catch_up``), so
  its detectors continue where they were. After :data:`MAX_RESTARTS` the audit gives up,
  loudly: every later change is counted in ``dropped``.

The child process runs at the server's priority; its CPU time is its own, not the server's.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import queue
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Sequence

from sentrycam.backend.audit.engine import AuditEngine, audited
from sentrycam.backend.audit.inbox import AuditInbox
from sentrycam.backend.feed import Change, ChangeFeed

log = logging.getLogger(__name__)

#: What the child may call on the server's store (the reads the audit makes; one write).
STORE_CALLS = frozenset({"probe", "scalars", "layer_stats", "snapshot_index", "embedding_index",
                         "predictions", "features", "embedding", "alerts", "upsert_alert"})
#: Children started after the first one died, before the audit gives up.
MAX_RESTARTS = 5
#: Seconds between checks that an idle child is still alive.
WATCH_S = 1.0
#: Seconds a status request waits for the child (it answers between batches).
STATUS_TIMEOUT_S = 30.0
#: Seconds the child gets to exit after being asked, and again after SIGTERM.
EXIT_WAIT_S = 5.0
_STOP, _WAKE = object(), object()


# ----------------------------------------------------------------------------- the child

class _StoreCalls:
    """The child's stand-in for the store: each method call goes to the server over the pipe."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        if name not in STORE_CALLS:
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._conn.send(("call", (name, args, kwargs)))
            outcome, value = self._conn.recv()
            if outcome == "error":
                raise RuntimeError(f"store.{name} failed in the server:\n{value}")
            return value
        return call


class _FeedCalls:
    """The child's stand-in for the change feed: what the engine publishes goes to the server."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def publish(self, changes: Sequence[Change]) -> None:
        self._conn.send(("publish", list(changes)))


def serve(conn: Connection, log_level: int) -> None:
    """The child's loop: ``(operation, argument)`` in; store calls and publications out while
    auditing; then ``(operation, result)``. Ends on "stop" or when the server's end closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops it (Ctrl-C reaches both)
    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)s %(name)s (audit process): %(message)s")
    engine = AuditEngine(_StoreCalls(conn), _FeedCalls(conn))  # type: ignore[arg-type]
    while True:
        try:
            operation, argument = conn.recv()
        except (EOFError, OSError):
            return  # the server is gone: no orphan stays
        if operation == "batch":
            engine.process(argument)
            conn.send(("done", engine.stats()))
        elif operation == "status":
            conn.send(("status", engine.run_status(argument)))
        elif operation == "stop":
            engine.flush_open_alerts()
            conn.send(("stopped", engine.stats()))
            return


# ----------------------------------------------------------------------------- the server's side

class ChildLost(RuntimeError):
    """The audit process died (its end of the pipe closed)."""


class _Child:
    """One audit process and the server's end of its pipe."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, daemon=True, name="sentrycam-audit",
                                       args=(child, logging.getLogger().getEffectiveLevel()))
        self.process.start()
        child.close()  # only the child holds its end: its death reads as EOF here
        self.fed = False  # whether it was given changes (else it holds no open alert)

    def exchange(self, operation: str, argument: Any, store: Any, feed: ChangeFeed) -> Any:
        """Send one request; serve the child's store calls and publications until it answers."""
        self.fed = self.fed or operation == "batch"
        try:
            self.conn.send((operation, argument))
            while True:
                kind, value = self.conn.recv()
                if kind == "call":
                    self._reply(_store_call(store, *value))
                elif kind == "publish":
                    feed.publish(value)
                else:
                    return value
        except (EOFError, OSError) as exc:
            self.process.join(EXIT_WAIT_S)
            raise ChildLost(f"the audit process {self.process.pid} died (exit code "
                            f"{self.process.exitcode})") from exc

    def _reply(self, reply: tuple[str, Any]) -> None:
        try:
            self.conn.send(reply)
        except (EOFError, OSError):
            raise
        except Exception:  # a result that cannot be pickled: the child's call fails, not both
            self.conn.send(("error", traceback.format_exc()))

    def stop(self, deadline: float) -> None:
        """Wait for the process to exit until ``deadline`` (monotonic), then terminate it."""
        self.process.join(max(0.0, deadline - time.monotonic()))
        for end in (self.process.terminate, self.process.kill):
            if self.process.is_alive():
                end()
                self.process.join(EXIT_WAIT_S)
        self.conn.close()


def _store_call(store: Any, name: str, args: tuple, kwargs: dict) -> tuple[str, Any]:
    if name not in STORE_CALLS:
        return "error", f"store.{name} is not offered to the audit process"
    try:
        return "ok", getattr(store, name)(*args, **kwargs)
    except Exception:
        log.debug("audit process: store.%s failed", name, exc_info=True)
        return "error", traceback.format_exc()


class AuditProcess:
    """The audit engine in a child process, fed the committed change feed (see module doc)."""

    def __init__(self, store: Any, feed: ChangeFeed, *, queue_size: int = 100_000) -> None:
        self.store, self.feed = store, feed
        self._inbox = AuditInbox(queue_size, audited)
        self._status: collections.deque = collections.deque()  # (run_id, slot, done event)
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._child_counts: dict[str, int] = {}  # the live child's engine counters
        self._past: collections.Counter = collections.Counter()  # those of children that died
        self.counts = {"dropped": 0, "unaudited": 0, "restarts": 0}
        self.failed = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._inbox.start(self.feed, self._loop, "sentrycam-audit-dispatch")

    def stop(self, timeout: float = 30.0) -> None:
        """Unsubscribe, audit what is queued, have the child store the open alerts, stop it."""
        self._inbox.stop(_STOP, timeout)
        child, self._child = self._child, None
        if child is not None:  # once it answered "stop" it exits by itself
            child.stop(time.monotonic() + (EXIT_WAIT_S if child.fed else 0.0))

    def alive(self) -> bool:
        """Whether the dispatch thread runs and a child process is up (or about to start)."""
        child = self._child
        return (self._inbox.consuming() and not self.failed
                and (child is None or child.process.is_alive()))

    def pid(self) -> int | None:
        child = self._child
        return child.process.pid if child is not None else None

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once everything queued so far was audited (tests, benchmarks)."""
        return self._inbox.wait_idle(timeout)

    # -- dispatch thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        self._start_child()  # now, so that its start-up (imports) is over when the runs come
        while True:
            self._answer_status()
            try:
                batch = self._inbox.take(timeout=WATCH_S)
            except queue.Empty:
                self._watch()
                continue
            if batch is _WAKE:
                continue
            if batch is _STOP:
                self._answer_status()
                if self._child is not None and self._child.fed:
                    self._request("stop", None)
                return
            self._request("batch", batch)
            self._inbox.done(batch)

    def _request(self, operation: str, argument: Any) -> Any:
        """One exchange with the child (started first if none runs); None if it died."""
        if self.failed:
            if operation == "batch":
                with self._lock:
                    self.counts["dropped"] += len(argument)
            return None
        self._watch()
        if self._child is None:
            self._start_child()
        if self._child is None:  # it could not start: counted
            if operation == "batch":
                with self._lock:
                    self.counts["unaudited"] += len(argument)
            return None
        try:
            value = self._child.exchange(operation, argument, self.store, self.feed)
        except ChildLost as exc:
            self._lost(exc, len(argument) if operation == "batch" else 0)
            return None
        except Exception as exc:  # e.g. a change that cannot be pickled: a fresh child, clean
            log.exception("could not hand %s to the audit process", operation)
            self._lost(ChildLost(f"the audit process was ended after: {exc!r}"),
                       len(argument) if operation == "batch" else 0)
            return None
        if operation in ("batch", "stop"):
            with self._lock:
                self._child_counts = value
        return value

    def _watch(self) -> None:
        """Notice a child that died while idle, and start another at once."""
        child = self._child
        if child is None or child.process.is_alive() or self.failed:
            return
        self._lost(ChildLost(f"the audit process {child.process.pid} died (exit code "
                             f"{child.process.exitcode})"), 0)
        if not self.failed:
            self._start_child()

    def _start_child(self) -> None:
        try:
            self._child = _Child()
        except Exception:  # e.g. out of processes or memory: counted, tried again later
            log.exception("could not start the audit process")
            with self._lock:
                self.counts["restarts"] += 1
                self.failed = self.counts["restarts"] > MAX_RESTARTS
            return
        log.info("audit process started (pid %d)", self._child.process.pid)

    def _lost(self, exc: ChildLost, changes: int) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.stop(time.monotonic())
        with self._lock:
            self._past.update({k: v for k, v in self._child_counts.items()
                               if k in ("changes", "errors", "alerts")})
            self._child_counts = {}
            self.counts["unaudited"] += changes
            self.counts["restarts"] += 1
            self.failed = self.counts["restarts"] > MAX_RESTARTS
        if self.failed:
            log.error("%s; it died %d times: the audit stops (changes are counted as dropped)",
                      exc, self.counts["restarts"])
        else:
            log.warning("%s while auditing %d changes: starting another (its detectors catch up "
                        "from the store)", exc, changes)

    def _answer_status(self) -> None:
        while self._status:
            run_id, slot, done = self._status.popleft()
            slot.append(self._request("status", run_id) if self._child is not None else None)
            done.set()

    # -- status -------------------------------------------------------------------------------

    def run_status(self, run_id: str) -> dict[str, Any] | None:
        """The run's audit status from the child (None: the child has not seen the run)."""
        slot: list[Any] = []
        done = threading.Event()
        self._status.append((run_id, slot, done))
        self._inbox.signal(_WAKE)
        if not done.wait(STATUS_TIMEOUT_S):
            log.warning("the audit process did not answer a status request within %.0f s",
                        STATUS_TIMEOUT_S)
            return None
        return slot[0]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            live = self._child_counts
            merged = {k: self._past[k] + int(live.get(k, 0))
                      for k in ("changes", "errors", "alerts")}
            merged["dropped"] = self.counts["dropped"] + self._inbox.dropped
            return {**merged, "unaudited": self.counts["unaudited"],
                    "restarts": self.counts["restarts"], "runs": int(live.get("runs", 0)),
                    "queued": self._inbox.size(), "kind": "process", "pid": self.pid(),
                    "failed": self.failed}
