"""The work of one (run, layer), wherever it runs: a thread of the server, a worker process of the
pool or a Ray actor.

A :class:`LayerWork` holds a layer's warm state (its :class:`~sentrycam.projector.Projector` and
its :class:`~sentrycam.projector.quality.QualityWindow`) and turns a snapshot's features into
coordinates, a checkpoint and, asked next, the quality of that map. It imports neither the store
nor the web stack: a worker receives features and returns numbers, the server alone writes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: (run_id, layer): what one projector and one quality window belong to.
LayerKey = tuple[str, str]


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


def warm_up_projector() -> None:
    """Load or compile numba's kernels in this process (see :func:`sentrycam.projector.warm_up`);
    the one call site of the warm-up for threads, pool workers and actors."""
    from sentrycam.projector import warm_up

    log.info("projector warmed up in %.1f s", warm_up())


def limit_threads(threads: int) -> None:
    """Give this process's torch ``threads`` threads: workers sharing the cores must not each
    start one thread per core (and the same count keeps maps equal across executors)."""
    import torch

    torch.set_num_threads(max(1, threads))


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
