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

from sentrycam.backend.projection_work import (CpuShare, LayerKey, LayerWork, Projected,
                                               ProjectRequest, confine, warm_up_projector)

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
    """Projection in the calling thread; layers' warm state in this process. ``share``: its
    threads bound the whole server process's compute pools; ``lowest`` lowers the projecting
    thread to nice 19 only, not to the idle class: it shares the GIL with ingest, which must
    not wait on a thread that only runs on idle cycles."""

    kind = "thread"
    slots = 1
    restarts = 0

    def __init__(self, share: CpuShare = CpuShare()) -> None:
        self._share = share
        self._layers: dict[LayerKey, LayerWork] = {}

    def start_slot(self, slot: int) -> None:
        confine(self._share, whole_process=False, idle_class=False)
        warm_up_projector(self._share.threads)

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


def make_engine(kind: str, workers: int | None, stopping: threading.Event,
                share: CpuShare = CpuShare()) -> Engine:
    """The engine called ``kind`` with ``workers`` slots (None: :func:`default_workers`);
    ``stopping`` tells it not to replace workers that die during shutdown; ``share`` bounds the
    threads and priority of the thread and pool engines (Ray schedules its own actors)."""
    if kind == "thread":
        return ThreadEngine(share)
    if kind == "pool":
        from sentrycam.backend.projection_pool import PoolEngine

        return PoolEngine(workers or default_workers(), stopping, share)
    if kind == "ray":
        from sentrycam.backend.projection_ray import RayEngine

        return RayEngine(workers or default_workers())
    raise ValueError(f"unknown projector engine {kind!r}: one of {', '.join(ENGINES)}")
