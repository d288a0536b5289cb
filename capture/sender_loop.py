"""The sender thread of :class:`~sentrycam.capture.sender.WebSocketTransport`.

:class:`SenderLoop` owns the websocket, the disk spool and the window of frames sent but not
yet acknowledged; nothing else touches them. Frames go out in seq order (the transport's seq;
each frame also carries its seq within its run, :mod:`sentrycam.capture.sequence`). When the
connection fails, the window's unacknowledged frames go to the spool first and every message
dequeued afterwards behind them, so the spool stays in seq order. After reconnecting, the spool
is replayed from the last acknowledged seq before anything newer, and spool segments are
deleted once acknowledged. Because the server skips a seq it already committed for a run, a
frame re-sent after a lost ack is stored once; because it stores a run's messages only in
order, nothing may overtake the backlog, and when it answers that it needs an earlier seq of a
run, the sender resends that run's frames from there.

A *retryable* error (``"retry": true``: the server cannot store now) is handled like a lost
connection: hang up, spool the window, back off, reconnect and replay; nothing is given up.
``websockets`` is imported inside the thread's functions only: importing capture stays cheap.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from sentrycam.protocol import wire
from sentrycam.protocol.chunks import KEEPALIVE_TIMEOUT_S
from sentrycam.protocol.messages import Message
from sentrycam.protocol.redaction import redacting_logger
from sentrycam.protocol.wire import ReplyType
from sentrycam.capture.queue import BoundedQueue, InFlightWindow, Progress
from sentrycam.capture.sender_stats import Counters, LogLimiter
from sentrycam.capture.sequence import RunSequences, frame_address, resend_plan
from sentrycam.capture.spool import Spool

logger = logging.getLogger(__name__)

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 5.0
#: How long the sender waits for an ack when it has nothing else to do (or a flush waits for
#: acks), and how long an idle sender waits for new messages before checking for stop and flush
#: requests.
ACK_POLL_S, IDLE_WAIT_S = 0.02, 0.1
#: After sending all that was queued, the sender pauses this long (a flush or a stop ends the
#: pause; while a flush waits, it reads acks instead) so that messages and acks gather. The
#: sender shares the trainer's cores: each wake-up (its own, and the websocket reader's for the
#: ack it brings) takes CPU time and a context switch from training, so it wakes at most about
#: 1 / LINGER_S times a second while messages keep coming (a run's scalars wait up to
#: BATCH_SECONDS in the step reporter anyway). At 50 ms the demo CNN's sender took about twice the
#: CPU and woke 3-4 times as often (docs/benchmarks.md).
LINGER_S = 0.25
#: Websocket close code of a server refusing a frame over its size limit.
MESSAGE_TOO_BIG = 1009


class SenderLoop:
    """The body of the sender thread. Only that thread touches the socket, spool and window."""

    def __init__(self, ws_url: str, token: str | None, queue: BoundedQueue, spool: Spool | None,
                 counters: Counters, progress: Progress, stop: threading.Event, *,
                 window: InFlightWindow, open_timeout: float) -> None:
        self.ws_url, self.token = ws_url, token
        self.queue, self.spool, self.counters, self.progress = queue, spool, counters, progress
        self.stop, self.window, self.open_timeout = stop, window, open_timeout
        self.log = LogLimiter(logger)
        #: Messages from an earlier process's spool count as dequeued: they come first.
        self.last_dequeued = spool.last_seq if spool else 0
        self.acked_through = 0
        self.spool_has_data = bool(spool and spool.segments())
        self.unsynced = False
        self.reader, self.backlog = None, False
        self.connections = self.failed_connects = 0
        #: Called (on this thread) with each alert the server sends back; None: ignored.
        self.on_alert = None
        self.skip: set[int] = set()  # seqs the server cannot take (too big)
        #: Each run's seqs on the wire carry on after what an earlier process spooled.
        self.sequences = (RunSequences.from_frames(frame for _, frame in spool.records())
                          if spool else RunSequences())
        #: Per run, the seq the server last asked for on this connection (answered already),
        #: and the asks not answered yet.
        self.asked: dict[str, int] = {}
        self.resend_from: dict[str, int] = {}
        self.retried_for_flush = 0  # the last flush request that got an extra connect
        #: Why the server asked to retry later on this connection (its storage failed), if it did.
        self.retry_later: str | None = None

    # -- main loop -------------------------------------------------------------------------

    def run(self) -> None:
        delay = BACKOFF_MIN_S
        while not self.stop.is_set():
            try:
                delay = self._cycle(delay)
            except Exception:
                self.counters.add("errors")
                self.log.warning("loop", "sentrycam sender hit an unexpected error; carrying on",
                                 exc_info=True)
                self.stop.wait(BACKOFF_MIN_S)
        try:
            self._shutdown()
        except Exception:
            self.counters.add("errors")
            logger.warning("sentrycam sender failed while stopping", exc_info=True)

    def _cycle(self, delay: float) -> float:
        """Connect and stream until the connection ends, or wait out ``delay`` offline; returns
        the backoff to use next time."""
        ws = self._connect()
        if ws is None:
            self._offline(delay)
            return min(delay * 2, BACKOFF_MAX_S)
        self.connections += 1
        acked_before = self.acked_through
        try:
            with ws:
                self._online(ws)
        except Exception as exc:
            from websockets.exceptions import ConnectionClosed
            if not isinstance(exc, (ConnectionClosed, OSError)):
                raise
            self.log.warning("lost", "connection to %s lost (%s); spooling to disk until it is back",
                             self.ws_url, exc)
            if getattr(getattr(exc, "rcvd", None), "code", None) == MESSAGE_TOO_BIG:
                self._drop_oversized()
        finally:
            self._after_disconnect()
        if self.stop.is_set() or (self.acked_through > acked_before and not self.retry_later):
            return BACKOFF_MIN_S
        # A server that accepts and then drops us without committing anything must not be
        # hammered in a tight loop: back off as if the connection had failed.
        self._offline(delay)
        return min(delay * 2, BACKOFF_MAX_S)

    def _drop_oversized(self) -> None:
        """The server closed with "message too big": give up on the largest unacknowledged frame,
        which would otherwise break every reconnection the same way."""
        if not self.window.frames:
            return
        seq = max(self.window.frames, key=lambda s: len(self.window.frames[s].frame))
        size = len(self.window.frames[seq].frame)
        self.window.discard(seq)
        self.skip.add(seq)  # it may sit in the spool too: replay passes over it
        self.counters.add("dropped")
        self.counters.add("errors")
        logger.error("message seq=%d (%d bytes) is larger than the server accepts; it is dropped. "
                     "Raise the server's max frame size or capture fewer or smaller layers",
                     seq, size)

    def _connect(self) -> Any:
        from websockets.exceptions import InvalidHandshake
        from websockets.sync.client import connect
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = connect(self.ws_url, additional_headers=headers, max_size=None,
                         open_timeout=self.open_timeout, close_timeout=1.0, compression=None,
                         ping_timeout=KEEPALIVE_TIMEOUT_S,
                         logger=redacting_logger(f"{__name__}.websocket"))
        except Exception as exc:  # every failure to connect is an outage: spool and retry
            self._connect_failed(exc, refused=isinstance(exc, InvalidHandshake))
            return None
        if self.spool_has_data:
            logger.info("connected to %s; sending the spooled backlog first", self.ws_url)
        return ws

    def _connect_failed(self, exc: Exception, *, refused: bool) -> None:
        self.failed_connects += 1
        if refused:  # the server answered but refused: token, path, version
            self.counters.add("errors")
            self.log.warning("refused", "sentrycam server at %s refused the connection (%s); "
                             "check the url and token. Spooling to disk meanwhile", self.ws_url, exc)
        elif isinstance(exc, (OSError, TimeoutError)):
            self.log.warning("connect", "cannot reach sentrycam server at %s (%s); "
                             "spooling to disk and retrying", self.ws_url, exc)
        else:  # a bug or a broken server
            self.counters.add("errors")
            self.log.warning("connectbug", "connecting to %s failed unexpectedly; spooling to disk "
                             "and retrying", self.ws_url, exc_info=exc)

    def _online(self, ws: Any) -> None:
        self.asked, self.resend_from, self.retry_later = {}, {}, None
        if self.spool_has_data:
            self.reader = self.spool.reader(self.acked_through)
            self.backlog = True
        while not self.stop.is_set() and self.retry_later is None:
            self._read_replies(ws, 0.0)
            self._settle(connected=True)  # acks just read, before an idle wait: a flush waits
            room = self.window.room()
            if not room:
                sent = 0
            elif self.backlog:
                sent = self._send_backlog(ws, room)
            else:
                sent = self._send_queued(ws, room, 0.0 if self.window.frames else IDLE_WAIT_S)
            self._settle(connected=True)
            if not sent and self.window.frames:
                self._read_replies(ws, ACK_POLL_S)
            elif 0 < sent < room and not self.backlog and self.progress.awaited():
                self._read_replies(ws, ACK_POLL_S)  # a flush waits: take its acks as they come
            elif 0 < sent < room and not self.backlog:
                self.progress.pause(LINGER_S, self.stop)

    def _offline(self, delay: float) -> None:
        """Spool whatever arrives for ``delay`` s. A new flush request cuts the wait short, so the
        server is tried once more at once; when that fails too, the spool is fsync'd and the
        flush is answered."""
        deadline = time.monotonic() + delay
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._spool_queue(wait=min(remaining, IDLE_WAIT_S))
            request = self.progress.unanswered()
            if request > self.retried_for_flush:
                self.retried_for_flush = request
                return
            if request:
                self._settle(connected=False, answer=request)
        self._settle(connected=False)

    def _shutdown(self) -> None:
        self._spool_queue(wait=0.0)
        self._settle(connected=False, answer=self.progress.unanswered())
        if self.spool is not None:
            self.spool.close()

    # -- sending ---------------------------------------------------------------------------

    def _send_queued(self, ws: Any, room: int, wait: float) -> int:
        """Send up to ``room`` new messages. Each enters the window before it is written, so a
        write that fails leaves it (and the rest of the batch) to be spooled."""
        batch = self._encode_batch(self.queue.get_batch(room, timeout=wait))
        return self._transmit(ws, batch, spooled=False)

    def _send_backlog(self, ws: Any, room: int) -> int:
        """Replay the next spooled frames. New messages join the spool's tail meanwhile, so that
        nothing overtakes the backlog (the server skips a seq lower than one it committed)."""
        self._spool_queue(wait=0.0)
        batch = self.reader.next_batch(room, max(1, self.window.max_bytes - self.window.nbytes))
        if not batch:
            self.backlog = False
        return self._transmit(ws, [(seq, frame, *frame_address(frame)) for seq, frame in batch
                                   if seq not in self.skip], spooled=True)

    def _transmit(self, ws: Any, batch: list[tuple[int, bytes, str, int]], spooled: bool) -> int:
        """Send ``(seq, frame, run_id, run_seq)`` items; each enters the window first."""
        for seq, frame, run_id, run_seq in batch:
            self.window.add(seq, frame, spooled, run_id, run_seq)
        for _seq, frame, _run_id, _run_seq in batch:
            ws.send(frame)
            self.counters.add("sent")
        return len(batch)

    def _encode_batch(self, items: list[tuple[int, float, Message]]
                      ) -> list[tuple[int, bytes, str, int]]:
        """Frame queued messages: ``(seq, frame, run_id, run_seq)``, each numbered in its run."""
        frames = []
        for seq, sent_at, message in items:
            self.last_dequeued = seq
            try:
                run_seq = self.sequences.next(message.run_id)
                frames.append((seq, wire.encode(message, run_seq, sent_at), message.run_id,
                               run_seq))
                self.sequences.take(message.run_id, run_seq)
            except Exception as exc:
                self.counters.add("errors")
                self.counters.add("dropped")
                self.log.warning("encode", "cannot encode a %s message (%s); it is dropped",
                                 getattr(message, "kind", type(message).__name__), exc)
        return frames

    # -- acknowledgements ------------------------------------------------------------------

    def _read_replies(self, ws: Any, timeout: float) -> None:
        """Handle every reply that is waiting; wait up to ``timeout`` s for the first."""
        while True:
            try:
                reply = ws.recv(timeout=timeout)
            except TimeoutError:
                return
            self._handle_reply(reply)
            self._resend(ws)
            timeout = 0.0

    def _handle_reply(self, reply: str | bytes) -> None:
        try:
            data = json.loads(reply)
        except (TypeError, ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            self.log.warning("reply", "ignoring a reply that is not a JSON object: %.80r", reply)
            return
        seq = data.get("seq")
        if data.get("type") == ReplyType.ACK and isinstance(seq, int):
            run_id = data.get("run_id")  # acks are per run; one without a run covers all
            released = self.window.release_through(seq, run_id if isinstance(run_id, str) else None)
            self.counters.add("acked", released)
        elif data.get("type") == ReplyType.ALERT:
            if self.on_alert is not None and isinstance(data.get("alert"), dict):
                try:
                    self.on_alert(data["alert"])
                except Exception as exc:  # the user's side must never stop the sender
                    self.log.warning("alert", "the alert callback failed: %r", exc)
        elif data.get("type") == ReplyType.ERROR:
            self._handle_error(data)

    def _handle_error(self, data: dict) -> None:
        run_id, seq, expected = data.get("run_id"), data.get("seq"), data.get("expected_seq")
        if data.get("retry") is True:
            if self.retry_later is None:
                self.log.warning("retry", "the server asks to send again later (%s); the "
                                 "messages wait in the spool meanwhile", data.get("error"))
            self.retry_later = str(data.get("error"))
            return
        if isinstance(expected, int) and isinstance(run_id, str):
            # Out of order: the server needs ``expected`` next; one resend answers every ask.
            if expected > self.asked.get(run_id, -1):
                self.asked[run_id] = self.resend_from[run_id] = expected
            return
        self.counters.add("errors")
        self.log.warning("rejected", "the server rejected message seq=%s of run %s: %s", seq,
                         run_id, data.get("error"))
        if isinstance(seq, int) and isinstance(run_id, str):
            # Settled: resending cannot help; _resend fills its seq in at the server's next ask.
            for held_seq, run_seq, _frame in self.window.of_run(run_id):
                if run_seq == seq:
                    self.window.discard(held_seq)
            self.asked.pop(run_id, None)

    def _resend(self, ws: Any) -> None:
        """Answer the server's asks: send each run's held frames again from the seq it needs,
        a ``lost`` event in each seq that is gone (:func:`~.sequence.resend_plan`)."""
        while self.resend_from:
            run_id, expected = self.resend_from.popitem()
            held = [(run_seq, frame) for _seq, run_seq, frame in self.window.of_run(run_id)]
            frames = resend_plan(held, run_id, expected)
            if not frames:  # nothing to send yet: answer the next ask instead
                self.asked.pop(run_id, None)
            logger.info("the server needs message %d of run %s next; resending %d frames",
                        expected, run_id, len(frames))
            for frame in frames:
                ws.send(frame)
                self.counters.add("sent")

    def _settle(self, connected: bool, answer: int = 0) -> None:
        """Advance what is acknowledged / durable, delete acknowledged spool segments, publish.

        Connected, every flush request is answered (it waits for acks); offline, ``answer``.
        """
        if connected:
            if self.window.frames:
                done = self.window.min_seq() - 1
            elif self.backlog:
                done = self.reader.last_seq
            else:
                done = self.last_dequeued
            if done > self.acked_through:
                self.acked_through = done
                if self.spool_has_data:
                    self._delete_acked_spool(done)
            self.progress.publish(self.acked_through, self.acked_through,
                                  answered=self.progress.unanswered())
            return
        if self.unsynced:
            try:
                self.spool.sync()
            except OSError as exc:
                self.log.warning("sync", "cannot fsync the spool in %s: %s", self.spool.directory, exc)
            self.unsynced = False
        self.progress.publish(self.acked_through, self.last_dequeued, answered=answer)

    # -- spooling --------------------------------------------------------------------------

    def _delete_acked_spool(self, seq: int) -> None:
        try:
            self.spool.ack(seq)
            self.spool_has_data = bool(self.spool.segments())
        except OSError as exc:  # retried at the next ack
            self.log.warning("unlink", "cannot delete acknowledged spool segments in %s: %s",
                             self.spool.directory, exc)

    def _after_disconnect(self) -> None:
        for seq, frame in self.window.take_unspooled():
            self._spool_frame(seq, frame)
        self.reader, self.backlog = None, False

    def _spool_queue(self, wait: float) -> None:
        """Move everything queued (waiting up to ``wait`` s for something) to the spool."""
        items = self.queue.get_batch(self.queue.max_items, timeout=wait)
        for seq, frame, _run_id, _run_seq in self._encode_batch(items):
            self._spool_frame(seq, frame)

    def _spool_frame(self, seq: int, frame: bytes) -> None:
        if self.spool is None:
            self.counters.add("dropped")
            self.log.warning("nospool", "no usable spool: a message the server did not get is dropped")
            return
        try:
            self.spool.append(seq, frame)
        except OSError as exc:
            self.counters.add("dropped")
            self.log.warning("spoolfull", "cannot write the spool in %s (%s); messages the server "
                             "did not get are dropped until it works again", self.spool.directory, exc)
            return
        self.counters.add("spooled")
        self.spool_has_data = self.unsynced = True
