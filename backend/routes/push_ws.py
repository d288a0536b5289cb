"""``/ws/runs/{run_id}``: live subscription to one run, for dashboards and notebooks.

The server sends binary push frames only (:mod:`sentrycam.protocol.push` declares each type):
first the catch-up (the whole stored run, ending with a ``caught_up`` frame), then each new
thing as it is stored. The client sends nothing; text it
sends is ignored. An unknown run closes the socket with code 4404 and a reason naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from sentrycam.backend.routes.parts import HubDep, StoreDep
from sentrycam.backend.store import UnknownRunError

log = logging.getLogger(__name__)
router = APIRouter(tags=["push"])

#: Close code for a subscription to a run the store does not hold.
UNKNOWN_RUN_CLOSE = 4404


@router.websocket("/ws/runs/{run_id}")
async def subscribe_run(websocket: WebSocket, run_id: str, store: StoreDep,
                        hub: HubDep) -> None:
    await websocket.accept()
    try:
        await asyncio.to_thread(store.run_summaries, run_id)
    except UnknownRunError as exc:
        await websocket.close(code=UNKNOWN_RUN_CLOSE, reason=str(exc)[:120])
        return
    serving = asyncio.create_task(hub.serve(run_id, websocket.send_bytes))
    listening = asyncio.create_task(_until_closed(websocket))
    done, pending = await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    for task in done:
        error = task.exception()
        if error is not None and not isinstance(error, (WebSocketDisconnect, RuntimeError,
                                                        OSError)):
            log.warning("push subscription to %s ended with %r", run_id, error)


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) whatever the client sends until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
