"""``GET /health``: is the server up, which versions does it speak, how is ingest doing.

It is the one route that needs no token, so that probes and launchers can check liveness.
While the store cannot be written (a full disk, an I/O error: see
:mod:`sentrycam.backend.store.failure`) it answers 503, status ``"failing"``, with the reason
and since when; once a commit works again, 200 and ``"ok"``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
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
    bytes_full (times a frame waited for the bytes in flight to drain), in_flight_bytes,
    sequence_refused (messages refused for their seq: a gap, or new data for a finished run),
    retry_later (messages answered "retry later" during a storage failure), queue_depth,
    queue_capacity, last_error, running)."""

    status: str
    version: str
    schema_version: int
    message_schema: int
    db: str
    pid: int
    uptime_s: float
    token_required: bool
    ingest: dict[str, Any]


class HealthFailing(Health):
    """The store cannot be written: ``reason`` (the storage error), ``failing_since`` (epoch
    seconds). Messages are answered "retry later" meanwhile; nothing acknowledged is lost."""

    reason: str
    failing_since: float


@router.get("/health", response_model=Health,
            responses={503: {"model": HealthFailing,
                             "description": "The store cannot be written (storage failure)"}})
def get_health(settings: SettingsDep, store: StoreDep, writer: WriterDep,
               started: StartedDep) -> Health | JSONResponse:
    stats = writer.stats()
    failure = store.failure
    health = Health(
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
    if failure is None:
        return health
    failing = HealthFailing(**{**health.model_dump(), "status": "failing"},
                            reason=failure.reason, failing_since=failure.since)
    return JSONResponse(status_code=503, content=failing.model_dump())
