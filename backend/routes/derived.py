"""REST reads of derived data: 2D maps, trails, projection quality, cluster health, alerts.

Handlers are plain ``def`` (run in the thread pool: DuckDB reads block). Unknown runs are 404
(app-wide handler); an absent map or alert is 404 with a message saying what is stored.
``GET /api/runs/{run_id}/embedding`` answers JSON columns, or with ``format=frame`` the same
binary push frame the live subscription carries (what the dashboard uses to replay).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from sentrycam.backend.feed import Change
from sentrycam.backend.routes import json_safe, state_of
from sentrycam.backend.routes.params import (AlertId, Layer, MinSeverity, RunId, Step,
                                             int64_list)
from sentrycam.backend.store import MissingSnapshotError, UnknownAlertError
from sentrycam.protocol.changes import ChangeKind

router = APIRouter(tags=["derived"])

#: Trails of at most this many samples per request.
MAX_TRAIL_SAMPLES = 1000


@router.get("/api/runs/{run_id}/embeddings", response_model=list[dict[str, Any]])
def get_embedding_index(run_id: RunId, request: Request) -> list[dict[str, Any]]:
    """[{step, layer, n}] of every stored 2D map, in (step, layer) order."""
    return json_safe(state_of(request).store.embedding_index(run_id))


@router.get("/api/runs/{run_id}/embedding")
def get_embedding(run_id: RunId, request: Request, layer: Layer, step: Step,
                  format: Literal["json", "frame"] = "json") -> Any:
    """The 2D map of ``layer`` at ``step``: JSON {sample_id, x, y}, or a binary push frame
    (coordinates with the model's outputs at that step and the map's cluster health)."""
    state = state_of(request)
    try:
        if format == "frame":
            frame = state.hub.builder.embedding_frame(run_id, layer, step)
            return Response(frame, media_type="application/octet-stream")
        sample_ids, coords = state.store.embedding(run_id, layer, step)
    except MissingSnapshotError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    return {"run_id": run_id, "layer": layer, "step": step, "sample_id": sample_ids.tolist(),
            "x": coords[:, 0].tolist(), "y": coords[:, 1].tolist()}


@router.get("/api/runs/{run_id}/trails")
def get_trails(run_id: RunId, request: Request, layer: Layer,
               sample_ids: Annotated[str, Query(description="comma-separated sample ids")]
               ) -> dict[str, Any]:
    """Every stored position of the given samples: columns sample_id, step, x, y in
    (sample_id, step) order."""
    wanted = int64_list(sample_ids, "sample_ids", MAX_TRAIL_SAMPLES)
    trails = state_of(request).store.embedding_trails(run_id, layer, wanted)
    return {"run_id": run_id, "layer": layer, **{k: v.tolist() for k, v in trails.items()}}


@router.get("/api/runs/{run_id}/quality")
def get_quality(run_id: RunId, request: Request,
                layer: Annotated[str | None, Query()] = None) -> dict[str, Any]:
    """Projection quality as columns step, layer, metric, value."""
    return {"run_id": run_id,
            **json_safe(state_of(request).store.projection_quality(run_id, layer))}


@router.get("/api/runs/{run_id}/cluster-health")
def get_cluster_health(run_id: RunId, request: Request, layer: Layer) -> dict[str, Any]:
    """Intra-class variance and inter-class distance of each stored map of ``layer``
    (columns step, intra, inter; spread [step][class] with the list of classes; see
    :mod:`sentrycam.backend.geometry`)."""
    state = state_of(request)
    steps = [e["step"] for e in state.store.embedding_index(run_id) if e["layer"] == layer]
    columns = state.hub.builder.health_columns(run_id, layer, steps)
    return {"run_id": run_id, "layer": layer, **json_safe(columns)}


@router.get("/api/runs/{run_id}/alerts", response_model=list[dict[str, Any]])
def get_run_alerts(run_id: RunId, request: Request,
                   min_severity: MinSeverity = 0) -> list[dict[str, Any]]:
    """The run's alerts in (step, alert_id) order."""
    return json_safe(state_of(request).store.alerts(run_id, min_severity))


@router.get("/api/alerts", response_model=list[dict[str, Any]])
def get_alerts(request: Request,
               min_severity: MinSeverity = 0) -> list[dict[str, Any]]:
    """Alerts of every run."""
    return json_safe(state_of(request).store.alerts(None, min_severity))


@router.post("/api/alerts/{alert_id}/acknowledge")
def acknowledge_alert(alert_id: AlertId, request: Request) -> dict[str, Any]:
    """Mark an alert seen; dashboards subscribed to its run receive the updated list."""
    state = state_of(request)
    try:
        state.store.acknowledge_alert(alert_id)
    except UnknownAlertError:
        raise HTTPException(status_code=404, detail=f"no alert with id {alert_id}; list them "
                            "with GET /api/alerts") from None
    run_id = next((a["run_id"] for a in state.store.alerts() if a["alert_id"] == alert_id), None)
    if run_id is not None:
        state.feed.publish([Change(run_id, ChangeKind.ALERT)])
    return {"alert_id": alert_id, "acknowledged": True}
