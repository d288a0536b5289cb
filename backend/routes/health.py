"""``GET /health``: is the server up, which versions does it speak, how is ingest doing.

It is the one route that needs no token, so that probes and launchers can check liveness.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

import sentrycam
from sentrycam.backend.routes import json_safe
from sentrycam.backend.routes.parts import SettingsDep, StartedDep, StoreDep, WriterDep
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


@router.get("/health", response_model=Health, responses={503: {
    "model": Health, "description": "the store cannot be used: status and ingest say why"}})
def get_health(settings: SettingsDep, store: StoreDep, writer: WriterDep,
               started: StartedDep) -> Health:
    stats = writer.stats()
    return Health(
        status="ok" if stats["running"] else "degraded",
        version=sentrycam.__version__,
        schema_version=store.schema_version,
        message_schema=SCHEMA_VERSION,
        db=str(os.path.abspath(store.path)),
        pid=os.getpid(),
        uptime_s=round(time.monotonic() - started, 3),
        token_required=settings.token is not None,
        ingest=json_safe(stats),
    )
