"""``WebSocketTransport``: streams a run's messages to a sentrycam server, spooling to disk on outage.

The training thread calls :meth:`WebSocketTransport.send`, which assigns the transport's next
sequence number (from 1; its spool and flushes count in it) and puts ``(seq, time, message)``
on a :class:`~sentrycam.capture.queue.BoundedQueue`; it never waits and never raises, and a
full queue drops the message and counts it. A large snapshot is put there as its row chunks
(:func:`~sentrycam.protocol.chunks.snapshot_chunks`, views of its arrays), one seq each and
all or none, so that no frame exceeds a few MiB. One daemon thread (``"sentrycam-sender"``,
:class:`~sentrycam.capture.sender_loop.SenderLoop`) does the rest: encoding (each frame gets
its seq within its run, from 0: :mod:`sentrycam.capture.sequence`), the websocket, the
acknowledgement window and the disk spool.

:func:`replay_spool` pushes what earlier processes left in a spool folder (``sentrycam sync``).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sentrycam.protocol.chunks import snapshot_chunks
from sentrycam.protocol.messages import MESSAGE_TYPES, RUN_ID_RULE, Message, Snapshot
from sentrycam.capture.queue import (DEFAULT_MAX_BYTES, DEFAULT_MAX_ITEMS, BoundedQueue,
                                     InFlightWindow, Progress, message_nbytes)
from sentrycam.capture.sender_loop import SenderLoop
from sentrycam.capture.sender_stats import Counters, LogLimiter
from sentrycam.capture.spool import DEFAULT_SEGMENT_BYTES, Spool, SpoolLockedError, spooled_runs
from sentrycam.capture.transport import TransportCounters

logger = logging.getLogger(__name__)

INGEST_PATH = "/ws/ingest"


def ingest_url(url: str) -> str:
    """The websocket ingest URL for a server base URL: ``http://h:p`` -> ``ws://h:p/ws/ingest``.

    Accepts http(s) and ws(s) URLs, with or without a path prefix or the ingest path itself.
    """
    parts = urlsplit(url)
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"server url {url!r} must look like http://host:port (or https://, ws://, "
                         "wss://); pass the address the sentrycam server prints at start")
    path = parts.path.rstrip("/")
    if not path.endswith(INGEST_PATH):
        path += INGEST_PATH
    return urlunsplit((schemes[parts.scheme], parts.netloc, path, parts.query, ""))


class WebSocketTransport:
    """Streams a run's messages to a sentrycam server (implements ``Transport``).

    ``url``: the server's base URL (``http://127.0.0.1:8765``) or its ingest websocket URL.
    ``run_id`` names the spool folder: frames wait there during an outage
    (``<spool_dir>/<run_id>/``), and frames an earlier process left there are sent first.
    Messages of other runs may travel too (they are acknowledged per run). ``token``: bearer
    token, if the server requires one. The queue holds at most ``max_queue`` messages and about
    ``max_queue_bytes`` bytes of arrays; at most ``window_frames`` frames / ``window_bytes``
    bytes are in flight unacknowledged.
    """

    def __init__(self, url: str, run_id: str, spool_dir: str | Path, token: str | None = None, *,
                 max_queue: int = DEFAULT_MAX_ITEMS, max_queue_bytes: int = DEFAULT_MAX_BYTES,
                 window_frames: int = 256, window_bytes: int = 64 * 1024 * 1024,
                 open_timeout: float = 5.0, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        if not RUN_ID_RULE(run_id):
            # The server's own rule: a run_id it would refuse must not reach the spool.
            raise ValueError(f"run_id {run_id!r} must be {RUN_ID_RULE.explain} (a uuid4 hex "
                             "string is the usual choice)")
        self.url, self.run_id = url, run_id
        self.ws_url = ingest_url(url)
        self._queue: BoundedQueue = BoundedQueue(max_queue, max_queue_bytes)
        self._counters = Counters()
        self._progress = Progress()
        self._stop = threading.Event()
        self._log = LogLimiter(logger)
        spool = self._open_spool(Path(spool_dir) / run_id, segment_bytes)
        #: seq numbers continue after anything an earlier process spooled for this run.
        self._next_seq = (spool.last_seq if spool else 0) + 1
        self._seq_lock = threading.Lock()
        self._closed = False
        self._close_lock = threading.Lock()
        self._loop = SenderLoop(self.ws_url, token, self._queue, spool, self._counters,
                                 self._progress, self._stop,
                                 window=InFlightWindow(window_frames, window_bytes),
                                 open_timeout=open_timeout)
        self._thread = threading.Thread(target=self._loop.run, name="sentrycam-sender", daemon=True)
        self._sender_cpu = 0.0  # its CPU seconds, as last read
        self._thread.start()

    def _open_spool(self, directory: Path, segment_bytes: int) -> Spool | None:
        spool = Spool(directory, segment_bytes=segment_bytes)
        try:
            spool.open()
        except (OSError, SpoolLockedError) as exc:
            logger.warning("sentrycam cannot use the spool folder %s (%s); while the server is "
                           "unreachable, messages will be dropped", directory, exc)
            return None
        return spool

    @property
    def spool_available(self) -> bool:
        """False when the spool folder could not be opened (messages are dropped on outage)."""
        return self._loop.spool is not None

    def send(self, message: Message) -> bool:
        """Queue ``message`` for sending; False (counted as dropped) if it cannot be taken.

        Never blocks and never raises.
        """
        try:
            reason = self._refusal(message)
            if reason is None:
                parts = snapshot_chunks(message) if isinstance(message, Snapshot) else [message]
                sized = [(part, message_nbytes(part)) for part in parts]
                with self._seq_lock:  # only the seq counter and a deque append happen under it
                    first, now = self._next_seq, time.time()
                    accepted = self._queue.put_all([((first + i, now, part), nbytes)
                                                    for i, (part, nbytes) in enumerate(sized)])
                    if accepted:
                        self._next_seq += len(parts)
                if accepted:
                    return True
                reason = "the send queue is full (server slow or unreachable)"
            else:
                self._counters.add("dropped")
            self._log.warning("drop", "sentrycam dropped a message: %s", reason)
            return False
        except Exception:
            self._counters.add("errors")
            self._log.warning("send", "sentrycam send failed unexpectedly", exc_info=True)
            return False

    def _refusal(self, message: Any) -> str | None:
        if self._closed:
            return "the transport is closed"
        if MESSAGE_TYPES.get(getattr(message, "kind", None)) is not type(message):
            return f"{type(message).__name__} is not a sentrycam message"
        if not isinstance(message.run_id, str) or not message.run_id:
            return f"its run_id {message.run_id!r} is not a non-empty string"
        return None

    def set_alert_callback(self, callback) -> None:
        """Have ``callback(alert_dict)`` called, on the sender thread, for each alert the server
        sends back for the runs this transport carries (see ``attach(on_alert=...)``)."""
        self._loop.on_alert = callback

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until every message sent so far is acknowledged by the server,
        or, if the server cannot be reached (tried once more at once), fsync'd to the spool."""
        with self._seq_lock:
            target = self._next_seq - 1
        if not self._thread.is_alive():  # closed: nothing will change any more
            return self._progress.wait(target, 0.0)
        request = self._progress.request_flush()
        self._queue.wake()
        return self._progress.wait(target, timeout, request=request)

    def wait_acked(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until the server acknowledged everything sent so far
        (including what an earlier process spooled); spooling does not count here."""
        with self._seq_lock:
            target = self._next_seq - 1
        return self._progress.wait(target, timeout, acked_only=True)

    def close(self, timeout: float = 10.0) -> None:
        """Flush, close the connection, stop the thread and fsync the spool. Idempotent.

        Returns within about ``timeout`` s; what the server has not acknowledged by then stays
        in the spool (see :func:`replay_spool`).
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        self.flush(timeout * 0.7)
        self._stop.set()
        self._progress.wake()  # ends a linger
        self._queue.wake()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            logger.warning("sentrycam sender did not stop within %.1f s; %d queued messages may "
                           "not reach the spool", timeout, self._queue.depth)

    def counters(self) -> TransportCounters:
        values = self._counters.snapshot()
        values["dropped"] += self._queue.dropped
        # The thread's CPU clock goes with it: its last reading stands after it ended.
        self._sender_cpu = max(self._sender_cpu, thread_cpu_seconds(self._thread))
        return TransportCounters(queue_depth=self._queue.depth,
                                 sender_cpu_seconds=self._sender_cpu, **values)

    def __enter__(self) -> WebSocketTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def thread_cpu_seconds(thread: threading.Thread) -> float:
    """CPU seconds ``thread`` has used so far, read from another thread (0.0 where the platform
    has no per-thread CPU clock, or once the thread is gone)."""
    if not thread.is_alive():  # a finished thread's id names nothing (or another thread)
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (AttributeError, OSError, TypeError):
        return 0.0


def replay_spool(spool_dir: str | Path, url: str, token: str | None = None,
                 timeout: float = 60.0) -> int:
    """Push every run spooled under ``spool_dir`` to the server at ``url``; returns messages acked.

    Acknowledged spool data is deleted; what is not acknowledged within ``timeout`` s stays for
    a later attempt (the server skips what it already has, so repeating is safe). Runs whose
    spool another process holds (a trainer still running) are skipped. Raises
    ``ConnectionError`` when the server cannot be reached at all.
    """
    deadline = time.monotonic() + timeout
    acked = 0
    for run_dir in spooled_runs(spool_dir):
        if not RUN_ID_RULE(run_dir.name):
            logger.warning("skipping %s: not a sentrycam spool folder", run_dir)
            continue
        transport = WebSocketTransport(url, run_dir.name, spool_dir, token)
        try:
            if not transport.spool_available:
                logger.warning("skipping spooled run %s: its spool is in use", run_dir.name)
                continue
            _wait_for_replay(transport, deadline)
        finally:
            transport.close(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
        acked += transport.counters().acked
        if any(run_dir.glob("*.seg")):
            logger.warning("run %s: some spooled messages were not acknowledged within %.0f s; "
                           "run the replay again", run_dir.name, timeout)
    return acked


def _wait_for_replay(transport: WebSocketTransport, deadline: float) -> None:
    """Wait until the transport's backlog is acknowledged; give up early if nothing connects."""
    while not transport.wait_acked(min(0.2, max(0.0, deadline - time.monotonic()))):
        loop = transport._loop
        if loop.connections == 0 and loop.failed_connects >= 3:
            raise ConnectionError(f"cannot reach the sentrycam server at {transport.ws_url}; "
                                  f"spooled runs stay in {transport._loop.spool.directory.parent}")
        if time.monotonic() >= deadline:
            return
