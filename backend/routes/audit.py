"""``GET /api/runs/{run_id}/audit``: what the audit engine is doing for a run.

Lists the active detectors, the inactive ones with the reason (no labels, no validation
metric, no embeddings yet...), the open alerts, the engine's error count for the run, and the
per-layer geometry history (the cluster health trajectory). A stored run the engine has not seen
since the server started is reported with every detector inactive.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from sentrycam.backend.audit.detectors import build_detectors
from sentrycam.backend.routes import json_safe
from sentrycam.backend.routes.errors import problems
from sentrycam.backend.routes.params import RunId
from sentrycam.backend.routes.parts import AuditDep, StoreDep

router = APIRouter(prefix="/api/runs", tags=["audit"])

NOT_SEEN = "no data from this run has reached the audit engine since the server started"


class AuditStatus(BaseModel):
    """The audit of one run. ``open_alerts``: alert records; ``detectors``: each detector's
    own status; ``geometry``: {detector: {layer: [trajectory point...]}}; ``engine``: the
    engine's counters (null when it is not running). Non-finite values are null."""

    run_id: str
    last_step: int | None
    ended: bool | None
    errors: int
    alerts_raised: int
    open_alerts: list[dict[str, Any]]
    active: list[str]
    inactive: dict[str, str]
    detectors: list[dict[str, Any]]
    geometry: dict[str, Any]
    engine: dict[str, Any] | None


@router.get("/{run_id}/audit", response_model=AuditStatus, responses=problems(404, 503))
def get_audit(run_id: RunId, store: StoreDep, engine: AuditDep) -> dict[str, Any]:
    store.run_summaries(run_id)  # unknown run -> 404
    status = engine.run_status(run_id) if engine is not None else None
    if status is None:
        names = sorted(d.name for d in build_detectors())
        reason = NOT_SEEN if engine is not None else "the audit engine is not running"
        status = {"run_id": run_id, "last_step": None, "ended": None, "errors": 0,
                  "alerts_raised": 0, "open_alerts": [], "active": [],
                  "inactive": {name: reason for name in names}, "detectors": [],
                  "geometry": {}}
    status["engine"] = engine.stats() if engine is not None else None
    return json_safe(status)
