"""The work of one (run, layer), wherever it runs: a thread of the server, a worker process of the
pool or a Ray actor.

A :class:`LayerWork` holds a layer's warm state (its :class:`~sentrycam.projector.Projector` and
its :class:`~sentrycam.projector.quality.QualityWindow`) and turns a snapshot's features into
coordinates, a checkpoint and, asked next, the quality of that map. It imports neither the store
nor the web stack: a worker receives features and returns numbers, the server alone writes.
:class:`CpuShare` and :func:`confine` say how much of the machine such a process takes.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: (run_id, layer): what one projector and one quality window belong to.
LayerKey = tuple[str, str]
#: The nice value of a process at the lowest priority (Unix: 19 is the most yielding).
NICEST = 19


class WorkerLost(RuntimeError):
    """The process or actor that held a layer died while projecting (the layer's state is
    rebuilt from the server's newest checkpoint on the next try)."""


@dataclass(frozen=True)
class Resume:
    """Where a layer carries on from: the projector checkpoint stored for ``step``."""

    step: int
    checkpoint: bytes


@dataclass(frozen=True)
class ProjectRequest:
    """One snapshot of one layer: ids int64 [N], features [N, D] (float16 or float32, as
    captured), labels int64 [N] or None. ``settings`` and ``device`` build the projector when the
    layer is new; ``resume`` is the newest checkpoint, used when the executor does not hold the
    layer's warm state (a new or replaced worker)."""

    key: LayerKey
    step: int
    ids: np.ndarray
    features: np.ndarray
    labels: np.ndarray | None
    settings: dict[str, Any]
    device: str
    resume: Resume | None


@dataclass(frozen=True)
class Projected:
    """A map: coords float32 [N, 2], the projector checkpoint after it, the projector's
    ``last_info`` and the seconds the update took."""

    coords: np.ndarray
    checkpoint: bytes
    info: dict[str, Any]
    seconds: float


def warm_up_projector(threads: int | None = None) -> None:
    """Load or compile numba's kernels in this process (see :func:`sentrycam.projector.warm_up`);
    the one call site of the warm-up for threads, pool workers and actors. ``threads`` bounds
    the thread pools again afterwards: the warm-up loads libraries (scipy's BLAS, say) that
    were not there to bound before."""
    from sentrycam.projector import warm_up

    log.info("projector warmed up in %.1f s", warm_up())
    if threads is not None:
        limit_threads(threads)


@dataclass(frozen=True)
class CpuShare:
    """How much of the machine a projecting process may take. ``threads``: compute threads of
    each worker (torch, numba, BLAS/OpenMP; None: the engine's own choice); ``lowest``: run at
    the lowest CPU priority (a local server beside the training it watches: see
    :func:`lower_priority`)."""

    threads: int | None = None
    lowest: bool = False


def limit_threads(threads: int) -> None:
    """Give this process's torch, numba and BLAS/OpenMP pools ``threads`` threads each: workers
    sharing the cores must not each start one thread per core (and the same count keeps maps
    equal across executors). numba cannot go above the ``NUMBA_NUM_THREADS`` it started with."""
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    threads = max(1, threads)
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(threads)  # process-wide until changed: OpenBLAS, MKL, OpenMP


def lower_priority(whole_process: bool, idle_class: bool) -> str:
    """Drop to the lowest CPU priority: nice 19 and, with ``idle_class`` on Linux, the
    SCHED_IDLE class (it runs only on cycles no normal task wants, and a normal task that wakes
    preempts it at once). On Linux priority is per thread: ``whole_process`` lowers every
    thread running now (libraries start some on import) and the calling thread's later ones
    inherit it; otherwise only the calling thread. On macOS and other Unixes the whole process
    goes to nice 19 and there is no idle class; on Windows nothing changes. Returns what was
    done, for the log."""
    done = set()
    for tid in _thread_ids() if whole_process else [0]:
        if hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, tid, NICEST)
                done.add(f"nice {NICEST}")
            except OSError as exc:  # the thread ended, or a policy forbids it
                log.debug("cannot lower the nice value of thread %d: %s", tid, exc)
        if idle_class and hasattr(os, "SCHED_IDLE"):
            try:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                done.add("SCHED_IDLE")
            except OSError as exc:  # a container's seccomp policy may forbid it
                log.debug("cannot move thread %d to SCHED_IDLE: %s", tid, exc)
    return " and ".join(sorted(done)) or "normal priority (this platform cannot lower it)"


def _thread_ids() -> list[int]:
    """This process's thread ids where Linux lists them, else [0] (the calling process)."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def confine(share: CpuShare, whole_process: bool = True, idle_class: bool = True) -> None:
    """Apply ``share`` to the calling process (thread pools; None leaves them as they are) and
    its priority (see :func:`lower_priority`)."""
    threads = share.threads
    if threads is not None:
        limit_threads(threads)
    if share.lowest:
        log.info("projector at %s, %s compute thread(s)",
                 lower_priority(whole_process, idle_class), threads or "default")


def cpu_report() -> dict[str, Any]:
    """What this process projects with: its nice value (of the calling thread), whether it is
    in the idle class, and its thread pools' sizes (what a pool worker answers to "cpu")."""
    import numba
    import torch
    from threadpoolctl import threadpool_info

    policy = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None
    return {"nice": os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else None,
            "idle_class": policy is not None and policy == getattr(os, "SCHED_IDLE", None),
            "torch_threads": torch.get_num_threads(), "numba_threads": numba.get_num_threads(),
            "blas_threads": max((pool["num_threads"] for pool in threadpool_info()), default=None)}


class LayerWork:
    """The warm state of one layer (see module doc)."""

    def __init__(self, settings: dict[str, Any], device: str, resume: Resume | None) -> None:
        from sentrycam.projector import Projector
        from sentrycam.projector.quality import QualityWindow

        if resume is None:
            self.projector = Projector(seed=0, device=device, **settings)
        else:
            self.projector = Projector.from_bytes(resume.checkpoint, device=device)
        self.window = QualityWindow()
        self._last: tuple[float, float] | None = None

    @classmethod
    def for_request(cls, request: ProjectRequest) -> "LayerWork":
        return cls(request.settings, request.device, request.resume)

    def project(self, ids: np.ndarray, features: np.ndarray,
                labels: np.ndarray | None) -> Projected:
        """The next map of the layer; ValueError when the projector refuses the snapshot
        (NaN/Inf, a dimension change, too few points)."""
        started = time.perf_counter()
        coords = self.projector.update(features, ids, labels)
        # A layer's first update returns a fast initial layout and fits in the background; the
        # stored map is the fitted one, which the checkpoint holds and later snapshots link to.
        fitted = self.projector.wait_for_fit()
        coords = coords if fitted is None else fitted
        checkpoint = self.projector.to_bytes()
        seconds = time.perf_counter() - started
        info = dict(self.projector.last_info)
        self.window.add(ids, features, coords)
        self._last = (seconds, float(info["fraction"]))
        return Projected(np.asarray(coords, np.float32), checkpoint, info, seconds)

    def quality(self) -> dict[str, float]:
        """Quality metrics {name: value} of the newest map (see ``QualityWindow.metrics``)."""
        if self._last is None:
            raise RuntimeError("quality asked before any map")
        seconds, fraction = self._last
        return {**self.window.metrics(), "update_s": seconds, "sample_fraction": fraction}
