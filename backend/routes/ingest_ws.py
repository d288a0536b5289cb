"""``/ws/ingest``: the websocket that training processes stream their frames into.

Protocol (see :mod:`sentrycam.protocol.wire`): the client sends binary frames, one message each.
The server answers with the JSON text replies of :mod:`sentrycam.protocol.wire`: an ack once
every message of a run up to a seq is committed (duplicates of committed messages are acked,
not stored again), an error for a frame that was refused or could not be stored (the
connection stays open either way; for a frame out of order the error names the seq the run
needs next: see :mod:`sentrycam.backend.ingest`), and an alert for each alert the audit
engine raises or updates on a run this connection carries (:mod:`sentrycam.backend.audit.relay`).

One connection may carry several runs. A frame over the server's ``max_frame_bytes`` closes
the connection with code 1009 and a reason naming the limit (the websocket layer refuses to
buffer it); trainers send large snapshots in row chunks well under it
(:mod:`sentrycam.protocol.chunks`). Frames are validated on the event loop (cheap: arrays
are views into the received bytes) and handed to the ingest writer thread without blocking;
its results come back through :class:`ConnectionSink` onto this connection's loop.

Memory stays bounded: uvicorn reads a connection's next frame only once its handler asks
for it, and a handler asks only after the writer took its frame, which it does while the
frames waiting to be written, over all connections, stay under ``ingest_max_bytes``. A
handler held back reads nothing meanwhile, so the client's sends slow down (nothing is
dropped); the keepalive waits long enough for that (``ws_ping_timeout_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fastapi import APIRouter, WebSocket

from sentrycam.backend.activity import Activity
from sentrycam.backend.audit.relay import AlertRelay
from sentrycam.backend.ingest import IngestWriter, WriterStopped
from sentrycam.backend.routes.parts import ActivityDep, AlertRelayDep, WriterDep
from sentrycam.protocol.validation import FrameRejected, parse_frame
from sentrycam.protocol.messages import Message
from sentrycam.protocol.wire import ack_reply, error_reply

log = logging.getLogger(__name__)
router = APIRouter(tags=["ingest"])

#: How long a handler waits before retrying when the writer's queue is full.
BACKPRESSURE_PAUSE_S = 0.005
TEXT_FRAME_ERROR = ("text frames are not accepted on /ws/ingest: send each message as a binary "
                    "frame made by sentrycam.protocol.wire.encode")


class ConnectionSink:
    """Carries the writer thread's acks and errors onto one connection's event loop.

    Once the connection is gone, results are dropped: the client will resend whatever it did
    not see acknowledged, and the store ignores what it already holds.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, outbox: asyncio.Queue) -> None:
        self._loop = loop
        self._outbox = outbox
        self._closed = False

    def ack(self, run_id: str, seq: int) -> None:
        self._post(ack_reply(run_id, seq))

    def error(self, run_id: str, seq: int, problem: str,
              expected_seq: int | None = None, retry: bool = False) -> None:
        self._post(error_reply(problem, seq=seq, run_id=run_id, expected_seq=expected_seq,
                               retry=retry))

    def notify(self, reply: dict) -> None:
        """Any other reply (an alert), from any thread."""
        self._post(reply)

    def close(self) -> None:
        self._closed = True

    def _post(self, reply: dict) -> None:
        if self._closed:
            return
        try:
            self._loop.call_soon_threadsafe(self._outbox.put_nowait, reply)
        except RuntimeError:  # the loop has already closed: the server is going away
            self._closed = True


@router.websocket("/ws/ingest")
async def ingest(websocket: WebSocket, writer: WriterDep, activity: ActivityDep,
                 relay: AlertRelayDep) -> None:
    await websocket.accept()
    outbox: asyncio.Queue[dict] = asyncio.Queue()
    sink = ConnectionSink(asyncio.get_running_loop(), outbox)
    sender = asyncio.create_task(_send_replies(websocket, outbox))
    try:
        await _receive_frames(websocket, writer, activity, relay, sink, outbox)
    except Exception:  # a broken connection must never take anything else down
        log.warning("ingest connection failed", exc_info=True)
    finally:
        sink.close()
        if relay is not None:
            relay.forget(sink)
        await _stop_sender(sender)


async def _receive_frames(websocket: WebSocket, writer: IngestWriter, activity: Activity,
                          relay: AlertRelay | None, sink: ConnectionSink,
                          outbox: asyncio.Queue) -> None:
    relayed: set[str] = set()
    while True:
        event = await websocket.receive()
        if event["type"] == "websocket.disconnect":
            return
        activity.touch()
        data = event.get("bytes")
        if data is None:
            writer.count_rejected()
            outbox.put_nowait(error_reply(TEXT_FRAME_ERROR))
            continue
        try:
            seq, message = parse_frame(data)
        except FrameRejected as exc:
            writer.count_rejected()
            outbox.put_nowait(error_reply(str(exc), seq=exc.seq, run_id=exc.run_id))
            continue
        if relay is not None and message.run_id not in relayed:
            relayed.add(message.run_id)
            relay.watch(message.run_id, sink)
        if not await _submit(writer, sink, seq, message, len(data)):
            await websocket.close(code=1012, reason="server shutting down; reconnect later")
            return


async def _submit(writer: IngestWriter, sink: ConnectionSink, seq: int, message: Message,
                  nbytes: int) -> bool:
    """Hand one message (a frame of ``nbytes``, checked by ``parse_frame``) to the writer,
    pausing while it is full. False if it stopped."""
    try:
        while not writer.try_submit(sink, seq, message, nbytes, checked=True):
            # Not reading further frames is the backpressure: the client's sends slow down.
            await asyncio.sleep(BACKPRESSURE_PAUSE_S)
    except WriterStopped:
        return False
    return True


async def _send_replies(websocket: WebSocket, outbox: asyncio.Queue) -> None:
    while True:
        reply = await outbox.get()
        try:
            await websocket.send_text(json.dumps(reply))
        except Exception:  # the client went away; the receive loop sees the disconnect
            log.debug("could not send %s reply; connection closed", reply.get("type"))
            return


async def _stop_sender(sender: asyncio.Task) -> None:
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await sender
