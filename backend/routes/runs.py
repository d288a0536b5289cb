"""Read-only REST routes over the stored runs (``/api/runs...``).

Handlers are plain ``def`` so FastAPI runs them in its thread pool: store reads are blocking
DuckDB queries and must not hold up the event loop that carries ingest. An unknown run becomes
a 404 (see the ``UnknownRunError`` handler in :mod:`sentrycam.backend.app`); bad query values
are refused with 422 by the parameter declarations. Non-finite values go out as ``null``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from sentrycam.backend.routes import json_safe, stored_json_safe
from sentrycam.backend.routes.errors import problems
from sentrycam.backend.routes.parts import StoreDep
from sentrycam.backend.routes.params import Limit, RunId, SinceStep

router = APIRouter(prefix="/api/runs", tags=["runs"])


class RunSummary(BaseModel):
    """One run as the store summarises it; fields the store adds later pass through."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    name: str | None = None
    status: str | None = None
    created_at: str | None = None
    last_step: int | None = None
    n_scalar_rows: int = 0
    n_snapshots: int = 0
    layers: list[str] = []
    n_probe: int = 0
    n_embeddings: int = 0
    n_alerts: int = 0
    dropped: int | None = None
    capture_overhead: float | None = None
    snapshot_every: int | None = None
    n_events: int = 0
    spooled: int | None = None
    updated_at: str | None = None
    ended_at: str | None = None
    config: dict[str, Any] = {}


class ScalarColumns(BaseModel):
    """Scalar rows as columns: row i is (step[i], name[i], value[i], wall_time[i])."""

    run_id: str
    step: list[int]
    name: list[str]
    value: list[float | None]
    wall_time: list[float | None]


class LayerStatColumns(BaseModel):
    """Per-layer statistics as columns: row i is (step[i], layer[i], stat[i], value[i])."""

    run_id: str
    step: list[int]
    layer: list[str]
    stat: list[str]
    value: list[float | None]


class SnapshotEntry(BaseModel):
    """One stored snapshot of one layer; ``has_features`` is False once retention dropped its
    feature vectors; ``nonfinite``: how many NaN/Inf values the trainer saw in them."""

    step: int
    epoch: int | None = None
    layer: str
    n: int
    dim: int
    nonfinite: int | None = None
    has_features: bool


class EventEntry(BaseModel):
    """One entry of a run's event log."""

    step: int | None = None
    wall_time: float | None = None
    event: str
    message: str | None = None
    payload: dict[str, Any] = {}


def _summary(row: dict[str, Any]) -> RunSummary:
    return RunSummary.model_validate(json_safe({**row, "config": stored_json_safe(row["config"])}))


@router.get("", response_model=list[RunSummary], responses=problems(503))
def list_runs(store: StoreDep) -> list[RunSummary]:
    """Every stored run, as the store orders them (newest first)."""
    return [_summary(row) for row in store.run_summaries()]


@router.get("/{run_id}", response_model=RunSummary, responses=problems(404, 503))
def get_run(run_id: RunId, store: StoreDep) -> RunSummary:
    return _summary(store.run_summaries(run_id)[0])


@router.get("/{run_id}/scalars", response_model=ScalarColumns, responses=problems(404, 503))
def get_scalars(run_id: RunId, store: StoreDep,
                names: Annotated[str | None, Query(description="comma-separated names")] = None,
                since_step: SinceStep = None,
                limit: Limit = None) -> ScalarColumns:
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else None
    columns = store.scalars(run_id, names=wanted, since_step=since_step, limit=limit)
    return ScalarColumns(run_id=run_id, **_columns(columns, ("step", "name", "value", "wall_time")))


@router.get("/{run_id}/scalar-names", response_model=list[str], responses=problems(404, 503))
def get_scalar_names(run_id: RunId, store: StoreDep) -> list[str]:
    return list(store.scalar_names(run_id))


@router.get("/{run_id}/layer-stats", response_model=LayerStatColumns,
            responses=problems(404, 503))
def get_layer_stats(run_id: RunId, store: StoreDep,
                    since_step: SinceStep = None) -> LayerStatColumns:
    columns = store.layer_stats(run_id, since_step=since_step)
    return LayerStatColumns(run_id=run_id, **_columns(columns, ("step", "layer", "stat", "value")))


@router.get("/{run_id}/snapshots", response_model=list[SnapshotEntry],
            responses=problems(404, 503))
def get_snapshots(run_id: RunId, store: StoreDep) -> list[dict[str, Any]]:
    """One entry per stored snapshot (step, layer, sizes ...), oldest first."""
    return json_safe(store.snapshot_index(run_id))


@router.get("/{run_id}/events", response_model=list[EventEntry], responses=problems(404, 503))
def get_events(run_id: RunId, store: StoreDep) -> list[dict[str, Any]]:
    """The run's event log, oldest first."""
    return [{**json_safe(event), "payload": stored_json_safe(event["payload"])}
            for event in store.events(run_id)]


def _columns(columns: dict[str, Any], names: tuple[str, ...]) -> dict[str, list]:
    """The named columns as plain lists (numpy values converted, non-finite floats None)."""
    return {name: json_safe(list(columns.get(name, []))) for name in names}
