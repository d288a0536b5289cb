"""Read-only REST routes over the stored runs (``/api/runs...``).

Handlers are plain ``def`` so FastAPI runs them in its thread pool: store reads are blocking
DuckDB queries and must not hold up the event loop that carries ingest. An unknown run becomes
a 404 (see the ``UnknownRunError`` handler in :mod:`sentrycam.backend.app`); bad query values
are refused with 422 by the parameter declarations.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict

from sentrycam.backend.routes import json_safe, state_of
from sentrycam.backend.routes.params import Limit, RunId, SinceStep

router = APIRouter(prefix="/api/runs", tags=["runs"])


class _NonFinite(BaseModel):
    # NaN/Inf (common in training signals) travel as "NaN"/"Infinity"/"-Infinity".
    model_config = ConfigDict(ser_json_inf_nan="strings")


class RunSummary(_NonFinite):
    """One run as the store summarises it; fields the store adds later pass through."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="strings")

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


class ScalarColumns(_NonFinite):
    """Scalar rows as columns: row i is (step[i], name[i], value[i], wall_time[i])."""

    run_id: str
    step: list[int]
    name: list[str]
    value: list[float | None]
    wall_time: list[float | None]


class LayerStatColumns(_NonFinite):
    """Per-layer statistics as columns: row i is (step[i], layer[i], stat[i], value[i])."""

    run_id: str
    step: list[int]
    layer: list[str]
    stat: list[str]
    value: list[float | None]


def _summary(row: dict[str, Any]) -> RunSummary:
    return RunSummary.model_validate(json_safe(row))


@router.get("", response_model=list[RunSummary])
def list_runs(request: Request) -> list[RunSummary]:
    """Every stored run, as the store orders them (newest first)."""
    return [_summary(row) for row in state_of(request).store.run_summaries()]


@router.get("/{run_id}", response_model=RunSummary)
def get_run(run_id: RunId, request: Request) -> RunSummary:
    rows = state_of(request).store.run_summaries(run_id)
    return _summary(rows[0])


@router.get("/{run_id}/scalars", response_model=ScalarColumns)
def get_scalars(run_id: RunId, request: Request,
                names: Annotated[str | None, Query(description="comma-separated names")] = None,
                since_step: SinceStep = None,
                limit: Limit = None) -> ScalarColumns:
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else None
    columns = state_of(request).store.scalars(run_id, names=wanted, since_step=since_step,
                                              limit=limit)
    return ScalarColumns(run_id=run_id, **_columns(columns, ("step", "name", "value", "wall_time")))


@router.get("/{run_id}/scalar-names", response_model=list[str])
def get_scalar_names(run_id: RunId, request: Request) -> list[str]:
    return list(state_of(request).store.scalar_names(run_id))


@router.get("/{run_id}/layer-stats", response_model=LayerStatColumns)
def get_layer_stats(run_id: RunId, request: Request,
                    since_step: SinceStep = None) -> LayerStatColumns:
    columns = state_of(request).store.layer_stats(run_id, since_step=since_step)
    return LayerStatColumns(run_id=run_id, **_columns(columns, ("step", "layer", "stat", "value")))


@router.get("/{run_id}/snapshots", response_model=list[dict[str, Any]])
def get_snapshots(run_id: RunId, request: Request) -> list[dict[str, Any]]:
    """One entry per stored snapshot (step, layers, sizes ...), oldest first."""
    return json_safe(state_of(request).store.snapshot_index(run_id))


@router.get("/{run_id}/events", response_model=list[dict[str, Any]])
def get_events(run_id: RunId, request: Request) -> list[dict[str, Any]]:
    """The run's event log, oldest first."""
    return json_safe(state_of(request).store.events(run_id))


def _columns(columns: dict[str, Any], names: tuple[str, ...]) -> dict[str, list]:
    """The named columns as plain lists (numpy arrays and scalars converted)."""
    return {name: [v.item() if hasattr(v, "item") else v for v in columns.get(name, [])]
            for name in names}
