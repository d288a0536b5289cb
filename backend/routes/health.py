"""``GET /health``: is the server up, which versions does it speak, how is ingest doing.

It is the one route that needs no token, so that probes and launchers can check liveness.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

import sentrycam
from sentrycam.backend.routes import json_safe, state_of
from sentrycam.protocol.messages import SCHEMA_VERSION

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """``schema_version``: the database schema; ``message_schema``: the wire message schema;
    ``ingest``: the writer's counters (queued, committed, batches, failed_batches,
    failed_messages, rejected, sink_errors, queue_full (times a sender had to wait),
    sequence_refused (messages refused for their seq: a gap, or new data for a finished run),
    queue_depth, queue_capacity, last_error, running)."""

    status: str
    version: str
    schema_version: int
    message_schema: int
    db: str
    pid: int
    uptime_s: float
    token_required: bool
    ingest: dict[str, Any]


@router.get("/health", response_model=Health)
def get_health(request: Request) -> Health:
    state = state_of(request)
    stats = state.writer.stats()
    return Health(
        status="ok" if stats["running"] else "degraded",
        version=sentrycam.__version__,
        schema_version=state.store.schema_version,
        message_schema=SCHEMA_VERSION,
        db=str(os.path.abspath(state.store.path)),
        pid=os.getpid(),
        uptime_s=round(time.monotonic() - state.started_monotonic, 3),
        token_required=state.settings.token is not None,
        ingest=json_safe(stats),
    )
