"""Where projector jobs run: the engines behind :class:`~sentrycam.backend.projection.
ProjectionWorker`.

Every engine offers ``slots`` (how many jobs may run at once; the worker runs one dispatch
thread per slot) and, per slot: ``start_slot`` (warm up), ``accepts(slot, key)`` (whether the
slot may take a layer's next job), ``project(slot, request)`` (a :class:`Projected`; ValueError
for a snapshot the projector refuses, :class:`WorkerLost` when the process died) and
``quality(slot, key)``; ``stop()`` releases everything it started. The engines:

- ``thread``: one thread of the server process (notebooks, tests; shares the server's GIL);
- ``pool``: worker processes on this machine (:mod:`sentrycam.backend.projection_pool`);
- ``ray``: one Ray actor per layer (:mod:`sentrycam.backend.projection_ray`, extra ``ray``).
"""

from __future__ import annotations

import os
import threading
from typing import Literal, Protocol

from sentrycam.backend.projection_work import (LayerKey, LayerWork, Projected, ProjectRequest,
                                               warm_up_projector)

EngineKind = Literal["thread", "pool", "ray"]
ENGINES: tuple[str, ...] = ("thread", "pool", "ray")


def default_workers() -> int:
    """Pool size when none is set: one per core, at most 4 (beyond that the server's own
    threads, ingest and dashboards, need the cores)."""
    return max(1, min(os.cpu_count() or 1, 4))


class Engine(Protocol):
    kind: str
    slots: int
    restarts: int

    def start_slot(self, slot: int) -> None: ...
    def accepts(self, slot: int, key: LayerKey) -> bool: ...
    def project(self, slot: int, request: ProjectRequest) -> Projected: ...
    def quality(self, slot: int, key: LayerKey) -> dict[str, float]: ...
    def stop(self) -> None: ...


class ThreadEngine:
    """Projection in the calling thread; layers' warm state in this process."""

    kind = "thread"
    slots = 1
    restarts = 0

    def __init__(self) -> None:
        self._layers: dict[LayerKey, LayerWork] = {}

    def start_slot(self, slot: int) -> None:
        warm_up_projector()

    def accepts(self, slot: int, key: LayerKey) -> bool:
        return True

    def project(self, slot: int, request: ProjectRequest) -> Projected:
        work = self._layers.get(request.key)
        if work is None:
            work = self._layers[request.key] = LayerWork.for_request(request)
        return work.project(request.ids, request.features, request.labels)

    def quality(self, slot: int, key: LayerKey) -> dict[str, float]:
        return self._layers[key].quality()

    def stop(self) -> None:
        self._layers.clear()


def make_engine(kind: str, workers: int | None, stopping: threading.Event) -> Engine:
    """The engine called ``kind`` with ``workers`` slots (None: :func:`default_workers`);
    ``stopping`` tells it not to replace workers that die during shutdown."""
    if kind == "thread":
        return ThreadEngine()
    if kind == "pool":
        from sentrycam.backend.projection_pool import PoolEngine

        return PoolEngine(workers or default_workers(), stopping)
    if kind == "ray":
        from sentrycam.backend.projection_ray import RayEngine

        return RayEngine(workers or default_workers())
    raise ValueError(f"unknown projector engine {kind!r}: one of {', '.join(ENGINES)}")
