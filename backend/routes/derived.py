"""REST reads of derived data: 2D maps, trails, projection quality, cluster health, alerts.

Handlers are plain ``def`` (run in the thread pool: DuckDB reads block). Unknown runs are 404
(app-wide handler); an absent map or alert is 404 with a message saying what is stored.
``GET /api/runs/{run_id}/embedding`` answers JSON columns, or with ``format=frame`` the same
binary push frame the live subscription carries (what the dashboard uses to replay).
Non-finite values go out as ``null``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel

from sentrycam.backend.feed import Change
from sentrycam.backend.routes import json_safe, stored_json_safe
from sentrycam.backend.routes.errors import problems
from sentrycam.backend.routes.params import (AlertId, Int64ListQuery, Layer, MinSeverity, RunId,
                                             Step)
from sentrycam.backend.routes.parts import FeedDep, HubDep, StoreDep
from sentrycam.backend.store import MissingSnapshotError, UnknownAlertError
from sentrycam.protocol.changes import ChangeKind

router = APIRouter(tags=["derived"])

#: Trails of at most this many samples per request.
MAX_TRAIL_SAMPLES = 1000
SAMPLE_IDS = Int64ListQuery("sample_ids", MAX_TRAIL_SAMPLES, "the samples to follow")
#: The binary answer of ``format=frame`` (a push frame, :mod:`sentrycam.protocol.push`).
FRAME_MEDIA_TYPE = "application/octet-stream"


class EmbeddingEntry(BaseModel):
    """One stored 2D map: ``n`` points of ``layer`` at ``step``."""

    step: int
    layer: str
    n: int


class Embedding(BaseModel):
    """A 2D map as columns: point i is sample_id[i] at (x[i], y[i])."""

    run_id: str
    layer: str
    step: int
    sample_id: list[int]
    x: list[float | None]
    y: list[float | None]


class Trails(BaseModel):
    """Stored positions as columns, in (sample_id, step) order: row i is sample_id[i] at
    (x[i], y[i]) in the map of step[i]."""

    run_id: str
    layer: str
    sample_id: list[int]
    step: list[int]
    x: list[float | None]
    y: list[float | None]


class QualityColumns(BaseModel):
    """Projection quality as columns: row i is metric[i] = value[i] of the map of layer[i]
    at step[i]."""

    run_id: str
    step: list[int]
    layer: list[str]
    metric: list[str]
    value: list[float | None]


class ClusterHealth(BaseModel):
    """Per stored map of ``layer`` (row i: step[i]): intra-class variance, inter-class distance,
    and the spread of each class (spread[i][c] for classes[c]); null where undefined."""

    run_id: str
    layer: str
    step: list[int]
    intra: list[float | None]
    inter: list[float | None]
    spread: list[list[float | None]]
    classes: list[int]


class Alert(BaseModel):
    """An alert the audit engine raised (see :mod:`sentrycam.backend.audit`)."""

    alert_id: int
    run_id: str
    step: int
    detector: str
    layer: str | None = None
    severity: int
    magnitude: float | None = None
    duration: int | None = None
    evidence: Any = None
    message: str | None = None
    suggestion: str | None = None
    confidence: float | None = None
    acknowledged: bool
    created_at: str | None = None
    updated_at: str | None = None


class Acknowledged(BaseModel):
    alert_id: int
    acknowledged: bool


@router.get("/api/runs/{run_id}/embeddings", response_model=list[EmbeddingEntry],
            responses=problems(404, 503))
def get_embedding_index(run_id: RunId, store: StoreDep) -> list[dict[str, Any]]:
    """[{step, layer, n}] of every stored 2D map, in (step, layer) order."""
    return json_safe(store.embedding_index(run_id))


@router.get("/api/runs/{run_id}/embedding", response_model=Embedding,
            responses={**problems(404, 503), 200: {"content": {FRAME_MEDIA_TYPE: {
                "schema": {"type": "string", "format": "binary"}}},
                "description": "JSON columns, or with format=frame a binary push frame"}})
def get_embedding(run_id: RunId, layer: Layer, step: Step, store: StoreDep, hub: HubDep,
                  format: Literal["json", "frame"] = "json") -> Any:
    """The 2D map of ``layer`` at ``step``: JSON {sample_id, x, y}, or a binary push frame
    (coordinates with the model's outputs at that step and the map's cluster health)."""
    try:
        if format == "frame":
            frame = hub.builder.embedding_frame(run_id, layer, step)
            return Response(frame, media_type=FRAME_MEDIA_TYPE)
        sample_ids, coords = store.embedding(run_id, layer, step)
    except MissingSnapshotError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    return {"run_id": run_id, "layer": layer, "step": step, "sample_id": sample_ids.tolist(),
            "x": json_safe(coords[:, 0]), "y": json_safe(coords[:, 1])}


@router.get("/api/runs/{run_id}/trails", response_model=Trails, responses=problems(404, 503),
            openapi_extra=SAMPLE_IDS.openapi)
def get_trails(run_id: RunId, layer: Layer, store: StoreDep,
               sample_ids: Annotated[list[int], Depends(SAMPLE_IDS)]) -> dict[str, Any]:
    """Every stored position of the given samples: columns sample_id, step, x, y in
    (sample_id, step) order."""
    trails = store.embedding_trails(run_id, layer, sample_ids)
    return {"run_id": run_id, "layer": layer, **json_safe(trails)}


@router.get("/api/runs/{run_id}/quality", response_model=QualityColumns,
            responses=problems(404, 503))
def get_quality(run_id: RunId, store: StoreDep,
                layer: Annotated[str | None, Query()] = None) -> dict[str, Any]:
    """Projection quality as columns step, layer, metric, value."""
    return {"run_id": run_id, **json_safe(store.projection_quality(run_id, layer))}


@router.get("/api/runs/{run_id}/cluster-health", response_model=ClusterHealth,
            responses=problems(404, 503))
def get_cluster_health(run_id: RunId, layer: Layer, store: StoreDep,
                       hub: HubDep) -> dict[str, Any]:
    """Intra-class variance and inter-class distance of each stored map of ``layer``
    (columns step, intra, inter; spread [step][class] with the list of classes; see
    :mod:`sentrycam.backend.geometry`)."""
    steps = [e["step"] for e in store.embedding_index(run_id) if e["layer"] == layer]
    columns = hub.builder.health_columns(run_id, layer, steps)
    return {"run_id": run_id, "layer": layer, **json_safe(columns)}


@router.get("/api/runs/{run_id}/alerts", response_model=list[Alert],
            responses=problems(404, 503))
def get_run_alerts(run_id: RunId, store: StoreDep,
                   min_severity: MinSeverity = 0) -> list[dict[str, Any]]:
    """The run's alerts in (step, alert_id) order."""
    return _alerts(store.alerts(run_id, min_severity))


@router.get("/api/alerts", response_model=list[Alert], responses=problems(503))
def get_alerts(store: StoreDep, min_severity: MinSeverity = 0) -> list[dict[str, Any]]:
    """Alerts of every run."""
    return _alerts(store.alerts(None, min_severity))


@router.post("/api/alerts/{alert_id}/acknowledge", response_model=Acknowledged,
             responses=problems(404, 503))
def acknowledge_alert(alert_id: AlertId, store: StoreDep, feed: FeedDep) -> Acknowledged:
    """Mark an alert seen; dashboards subscribed to its run receive the updated list."""
    try:
        store.acknowledge_alert(alert_id)
    except UnknownAlertError:
        raise HTTPException(status_code=404, detail=f"no alert with id {alert_id}; list them "
                            "with GET /api/alerts") from None
    run_id = next((a["run_id"] for a in store.alerts() if a["alert_id"] == alert_id), None)
    if run_id is not None:
        feed.publish([Change(run_id, ChangeKind.ALERT)])
    return Acknowledged(alert_id=alert_id, acknowledged=True)


def _alerts(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**json_safe(alert), "evidence": stored_json_safe(alert["evidence"])}
            for alert in alerts]
