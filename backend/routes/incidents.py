"""``GET /api/runs/{run_id}/incidents``: a run's incidents, each with its diagnosis.

Incidents are derived from the stored alerts on each request (see
:mod:`sentrycam.backend.audit.incidents` for the grouping rule and why they are not stored).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from sentrycam.backend.audit.alerts import SEVERITY_NAMES
from sentrycam.backend.audit.diagnosis import DIAGNOSES
from sentrycam.backend.audit.incidents import CONFIRMED, incidents_of
from sentrycam.backend.routes.errors import problems
from sentrycam.backend.routes.parts import StoreDep
from sentrycam.backend.routes.params import RunId

router = APIRouter(prefix="/api/runs", tags=["audit"])

IncidentSeverity = Annotated[int, Query(
    ge=1, le=len(SEVERITY_NAMES) - 1,
    description="only incidents whose highest alert reached this severity (default: confirmed)")]


class RunnerUp(BaseModel):
    """A cause that did not lead, with its share of the evidence."""

    diagnosis: str
    score: float = Field(ge=0, le=1)


class Incident(BaseModel):
    """One event of a run: its alerts (ids, in the order they opened) and one diagnosis."""

    run_id: str
    incident_id: int = Field(description="the id of the incident's first alert")
    start_step: int
    end_step: int
    confirmed_step: int | None = Field(description="first step an alert of it was confirmed")
    severity: int = Field(ge=1, le=len(SEVERITY_NAMES) - 1)
    alert_ids: list[int]
    detectors: list[str] = Field(description="the detectors that fired, first firing first")
    diagnosis: str = Field(description="one of " + ", ".join(DIAGNOSES))
    confidence: float = Field(ge=0, le=1, description="the leading cause's share of evidence")
    runners_up: list[RunnerUp]
    suggestion: str
    decided_step: int = Field(description="the latest alert step the diagnosis used")


@router.get("/{run_id}/incidents", response_model=list[Incident],
            responses=problems(404, 503))
def get_incidents(run_id: RunId, store: StoreDep,
                  min_severity: IncidentSeverity = CONFIRMED) -> list[Incident]:
    """The run's incidents, oldest first."""
    alerts = store.alerts(run_id)  # unknown run -> 404
    return [Incident.model_validate(item) for item in incidents_of(run_id, alerts, min_severity)]
