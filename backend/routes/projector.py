"""``GET /api/projector``: what the resident projector worker is doing.

``state`` is ``off`` (disabled by the ``projector`` setting), ``warming`` (compiling numba at
start), ``ready`` or ``busy``; then the queue depth, how long the oldest queued snapshot has
waited (``behind_by_s``), counts of projected / skipped (superseded while queued) /
not_projectable (e.g. NaN/Inf features) snapshots and errors, the last error, and the most
recent problems.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from sentrycam.backend.routes import json_safe, state_of

router = APIRouter(prefix="/api", tags=["projector"])


@router.get("/projector", response_model=dict[str, Any])
def get_projector(request: Request) -> dict[str, Any]:
    worker = getattr(state_of(request), "projection", None)
    if worker is None:
        return {"state": "off"}
    return json_safe(worker.state())
