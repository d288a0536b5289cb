"""The projector's waiting jobs: in order within a layer, fair across runs.

A (run, layer)'s snapshots are projected one at a time and in step order (each map warm-starts
from its predecessor's state), so a layer with a job in flight offers nothing more. Among the
layers that can go, the run served longest ago goes first: a run that queues many or large
snapshots (a 20,000-point probe) takes one turn like any other and cannot starve the rest. A
layer keeps at most ``max_backlog`` waiting snapshots; beyond that its oldest is skipped.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sentrycam.backend.projection_work import LayerKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One layer of one snapshot: ids int64 [N], features [N, D] (as captured)."""

    run_id: str
    layer: str
    step: int
    ids: np.ndarray
    features: np.ndarray
    queued_at: float

    @property
    def key(self) -> LayerKey:
        return (self.run_id, self.layer)


class JobQueue:
    """Waiting jobs (see module doc). Not thread-safe: its owner holds a lock around calls."""

    def __init__(self, max_backlog: int) -> None:
        self.max_backlog = max_backlog
        self.pending: deque[Job] = deque()
        self.in_flight: dict[LayerKey, Job] = {}
        self._last_served: dict[str, int] = {}
        self._tick = itertools.count(1)

    def put(self, job: Job) -> Job | None:
        """Queue ``job``; returns the job it pushed out of its layer's backlog, if any."""
        same_layer = [j for j in self.pending if j.key == job.key]
        skipped = None
        if len(same_layer) >= self.max_backlog:
            skipped = same_layer[0]
            self.pending.remove(skipped)
            log.info("projector behind: skipping step %d of %s/%s (step %d arrived)",
                     skipped.step, job.run_id, job.layer, job.step)
        self.pending.append(job)
        return skipped

    def take(self, accepts: Callable[[LayerKey], bool]) -> Job | None:
        """The next job for a worker that ``accepts`` these layers (None: none now); it stays
        in flight until :meth:`done`."""
        job = self.next_for(accepts)
        if job is not None:
            self.pending.remove(job)
            self.in_flight[job.key] = job
            self._last_served[job.run_id] = next(self._tick)
        return job

    def next_for(self, accepts: Callable[[LayerKey], bool]) -> Job | None:
        """The job :meth:`take` would return now, left queued (None: none now)."""
        heads: dict[LayerKey, Job] = {}
        for job in self.pending:  # arrival order: the first job of a layer is its next step
            if job.key not in heads:
                heads[job.key] = job
        ready = [job for key, job in heads.items()
                 if key not in self.in_flight and accepts(key)]
        if not ready:
            return None
        return min(ready, key=lambda j: self._last_served.get(j.run_id, 0))

    def done(self, job: Job) -> None:
        self.in_flight.pop(job.key, None)

    def idle(self) -> bool:
        return not self.pending and not self.in_flight
