"""``GET /api/projector``: what the resident projector worker is doing.

``state`` is ``off`` (disabled by the ``projector`` setting), ``warming`` (compiling numba at
start), ``ready`` or ``busy``; then the queue depth, how long the oldest queued snapshot has
waited (``behind_by_s``), counts of projected / skipped (superseded while queued) /
not_projectable (e.g. NaN/Inf features) snapshots and errors, the last error, and the most
recent problems.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from sentrycam.backend.routes import json_safe
from sentrycam.backend.routes.parts import ProjectorDep

router = APIRouter(prefix="/api", tags=["projector"])


class ProjectorState(BaseModel):
    """``state``, then (unless it is ``off``) the worker's queue, counters and problems."""

    model_config = ConfigDict(extra="allow")

    state: str


@router.get("/projector", response_model=ProjectorState)
def get_projector(worker: ProjectorDep) -> dict[str, Any]:
    if worker is None:
        return {"state": "off"}
    return json_safe(worker.state())
