"""``GET /api/runs/{run_id}/alerts``: a run's stored alerts, oldest first.

Minimal route owned by the audit engine's branch; the dashboard's derived-data routes may
replace it with the same shape (a JSON list of alert dicts as ``Store.alerts`` returns them).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from sentrycam.backend.routes import json_safe, state_of

router = APIRouter(prefix="/api/runs", tags=["alerts"])


@router.get("/{run_id}/alerts", response_model=list[dict[str, Any]])
def get_alerts(run_id: str, request: Request,
               min_severity: Annotated[int, Query(ge=0, le=3)] = 0) -> list[dict[str, Any]]:
    """Alerts of the run with severity >= ``min_severity``, in (step, alert_id) order."""
    store = state_of(request).store
    store.run_summaries(run_id)  # unknown run -> 404
    return json_safe(store.alerts(run_id, min_severity=min_severity))
