"""``GET /api/projector``: what the resident projector worker is doing.

``state`` is ``off`` (disabled by the ``projector`` setting), ``warming`` (compiling numba at
start), ``ready`` or ``busy``; then the queue depth, how long the oldest queued snapshot has
waited (``behind_by_s``), counts of projected / skipped (superseded while queued) /
not_projectable (e.g. NaN/Inf features) snapshots and errors, the last error, and the most
recent problems. A projector that yields to training (the server ``attach`` starts) says whether
a job now waits for a free core (``waiting_for_cpu``), for how long so far (``deferred_s``), the
longest it may (``max_deferral_s``) and the cores free over the last second (``free_cores``).
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
    yields_to_training: bool | None = None
    waiting_for_cpu: bool | None = None
    deferred_s: float | None = None
    max_deferral_s: float | None = None
    free_cores: float | None = None


@router.get("/projector", response_model=ProjectorState, response_model_exclude_unset=True)
def get_projector(worker: ProjectorDep) -> dict[str, Any]:
    if worker is None:
        return {"state": "off"}
    return json_safe(worker.state())
