"""``GET /api/storage`` and ``GET /api/runs/{run_id}/storage``: the bytes the store holds.

What ``sentrycam inspect`` shows about sizes when a server holds the file (see
:mod:`sentrycam.backend.store.sizes` for what is counted). Plain ``def`` handlers: the reads
block on DuckDB and run in the thread pool.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from sentrycam.backend.routes.errors import problems
from sentrycam.backend.routes.params import RunId
from sentrycam.backend.routes.parts import StoreDep

router = APIRouter(tags=["storage"])


class RunBytes(BaseModel):
    """One run's data: feature vectors vs everything else, and its (step, layer) snapshots."""

    feature_bytes: int
    other_bytes: int
    snapshots: int
    snapshots_with_features: int


class SnapshotBytes(BaseModel):
    """One snapshot step: its layers, those still with feature vectors, and its bytes."""

    step: int
    layers: int
    layers_with_features: int
    feature_bytes: int
    other_bytes: int


class Storage(BaseModel):
    """The file's bytes on disk (and its write-ahead log's); each run's data bytes; with one
    run, each of its snapshots."""

    file_bytes: int
    wal_bytes: int
    runs: dict[str, RunBytes]
    snapshots: list[SnapshotBytes] | None = None


@router.get("/api/storage", response_model=Storage, response_model_exclude_none=True,
            responses=problems(503))
def get_storage(store: StoreDep) -> dict[str, Any]:
    """The store file's size and every run's bytes."""
    return store.storage()


@router.get("/api/runs/{run_id}/storage", response_model=Storage,
            response_model_exclude_none=True, responses=problems(404, 503))
def get_run_storage(run_id: RunId, store: StoreDep) -> dict[str, Any]:
    """The store file's size, the run's bytes and those of each of its snapshots."""
    return store.storage(run_id)
