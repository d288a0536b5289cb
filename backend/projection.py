"""The resident projector worker: every new snapshot of every layer becomes a stored 2D map.

It subscribes to the change feed for ``snapshot`` changes and queues one job per projected layer
(:mod:`sentrycam.backend.projection_queue`: in step order per layer, fair across runs, a
layer's oldest waiting snapshot skipped beyond ``max_backlog``). Ingest never waits for it: the
feed callback only queues. Only the deepest ``max_layers`` layers of each snapshot are projected
(all with 0), so a CPU-only server keeps up with a trainer. The projecting itself runs on an
engine (:mod:`sentrycam.backend.projection_engines`): a thread, a pool of worker processes or
Ray actors, one dispatch thread per slot. Per job: project (warm-started from the layer's
previous map; after a restart, from the store's newest checkpoint), store the coords and the
checkpoint, publish ``embedding``; then ask the same slot for the quality metrics, store them and
publish ``quality``. The server alone opens the store. A snapshot the projector refuses
(NaN/Inf features, a dimension change) is marked not projectable; a job whose worker died is
retried once on its replacement, then marked failed. numba is compiled once per worker at start
(state ``warming``). With ``yield_max_wait_s`` (the server that ``attach`` starts) a job does
not start while a run is training and less than about a core is free, until it has waited that
long (:mod:`sentrycam.backend.projection_pacing`); ``state()`` says when jobs wait for CPU.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from sentrycam.backend.feed import Change, ChangeFeed
from sentrycam.backend.projection_engines import Engine, make_engine
from sentrycam.backend.projection_pacing import POLL_S, CpuGate, CpuMeter, cpu_measure_available
from sentrycam.backend.projection_queue import Job, JobQueue
from sentrycam.backend.projection_work import (CpuShare, LayerKey, ProjectRequest, Resume,
                                               WorkerLost)
from sentrycam.backend.store import Store
from sentrycam.protocol.changes import INGEST_KINDS, ChangeKind

log = logging.getLogger(__name__)

__all__ = ["Job", "ProjectionWorker", "projected_layers"]

#: Per-snapshot training budget in the server: latency stays bounded on a busy machine.
SERVER_PROJECTOR_SETTINGS = {"time_limit_s": 4.0, "first_time_limit_s": 30.0}
RECENT_PROBLEMS = 20
#: Tries of a job whose worker died under it (the second on the worker that replaced it).
ATTEMPTS = 2


def projected_layers(features: dict[str, Any], max_layers: int) -> list[tuple[str, Any]]:
    """The (layer, features) pairs to project: the deepest ``max_layers`` layers of a snapshot
    (capture lists layers in model order), all of them when ``max_layers`` is 0."""
    layers = list(features.items())
    return layers if max_layers <= 0 else layers[-max_layers:]


class ProjectionWorker:
    """Background projection of snapshots (see module doc). ``start()``/``stop(timeout)``;
    :meth:`state` is what ``GET /api/projector`` shows. ``engine``: "thread", "pool" or "ray";
    ``workers``: the pool's processes or Ray's concurrent jobs (None: one per core, up to 4);
    ``cpu``: the threads and priority of the thread and pool engines; ``yield_max_wait_s``: hold
    a job while a run trains and less than about a core is free, at most that long (None: never
    hold; on a system without ``/proc/stat`` no job is held either)."""

    def __init__(self, store: Store, feed: ChangeFeed, *, device: str = "auto",
                 projector_settings: dict[str, Any] | None = None, max_layers: int = 2,
                 max_backlog: int = 12, engine: str = "thread",
                 workers: int | None = None, cpu: CpuShare = CpuShare(),
                 yield_max_wait_s: float | None = None) -> None:
        self.store, self.feed, self.device = store, feed, device
        self.projector_settings = {**SERVER_PROJECTOR_SETTINGS, **(projector_settings or {})}
        self.max_layers = max_layers
        self.engine_kind, self.workers, self.cpu = engine, workers, cpu
        self.engine: Engine | None = None
        self._lock = threading.Condition()
        self._queue = JobQueue(max_backlog)
        self._latest: dict[tuple[str, str], Resume | None] = {}
        self._labels: dict[str, dict[int, int]] = {}
        self._status = "stopped"
        self._warming = 0
        self._stopping = threading.Event()
        self._counts = {"received": 0, "projected": 0, "skipped": 0, "not_projectable": 0,
                        "errors": 0, "failed": 0, "quality_written": 0, "quality_dropped": 0}
        self._last_error: str | None = None
        self._last: dict[str, Any] | None = None
        self._problems: deque[dict[str, Any]] = deque(maxlen=RECENT_PROBLEMS)
        self._threads: list[threading.Thread] = []
        self._subscription = None
        self._gate = (CpuGate(CpuMeter(self._own_tasks), yield_max_wait_s)
                      if yield_max_wait_s is not None and cpu_measure_available() else None)
        self._held: dict[int, float] = {}  # slot -> queued_at of the job it holds for CPU
        self._draining = False  # stopping: no job is held any more

    @property
    def max_backlog(self) -> int:
        return self._queue.max_backlog

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the feed and start the engine's slots (warm-up first)."""
        self.subscribe()
        self.start_threads()

    def subscribe(self) -> None:
        """Start taking snapshot jobs from the feed (they queue until the threads run)."""
        self._status = "warming"
        self._subscription = self.feed.subscribe(self._on_changes, name="projector")

    def start_threads(self) -> None:
        self.engine = make_engine(self.engine_kind, self.workers, self._stopping, self.cpu)
        if self._gate is not None:
            self._gate.start()
        self._warming = self.engine.slots
        for slot in range(self.engine.slots):
            thread = threading.Thread(target=self._slot_loop, args=(slot,), daemon=True,
                                      name=f"sentrycam-projector-{slot}")
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> bool:
        """Finish queued work for up to ``timeout`` s, then stop every thread and worker
        process. True if all was done."""
        if self._subscription is not None:
            self._subscription.close()
        with self._lock:  # what is queued now gets the drain's time: nothing more will come
            self._draining = True
            self._lock.notify_all()
        drained = self.wait_idle(timeout)
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        if self.engine is not None:
            self.engine.stop()  # a worker still busy is terminated: its thread returns
        for thread in self._threads:
            thread.join(timeout=5.0)
            if thread.is_alive():  # e.g. still compiling numba: it is a daemon, let it go
                log.warning("%s did not stop within 5 s", thread.name)
        if self._gate is not None:
            self._gate.stop()
        self._status = "stopped"
        if not drained:
            log.warning("projector stopped with work left: %s", self.state())
        return drained

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or in progress (quality included); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not (self._queue.idle() and self._status != "warming"):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.5))
        return True

    def state(self) -> dict[str, Any]:
        with self._lock:
            oldest = min((job.queued_at for job in self._queue.pending), default=None)
            in_flight = [{"run_id": j.run_id, "layer": j.layer, "step": j.step}
                         for j in self._queue.in_flight.values()]
            engine = self.engine
            held = [self._gate.held_for(queued_at) for queued_at in self._held.values()
                    if self._gate is not None]
            return {
                "state": "busy" if in_flight and self._status == "ready" else self._status,
                "queue_depth": len(self._queue.pending),
                "behind_by_s": 0.0 if oldest is None else time.monotonic() - oldest,
                "busy_with": in_flight[0] if in_flight else None, "in_flight": in_flight,
                "quality_queue": 0, **self._counts,
                "engine": self.engine_kind,
                "workers": None if engine is None else engine.slots,
                "worker_restarts": 0 if engine is None else engine.restarts,
                "cpu": {"threads": self.cpu.threads,
                        "priority": "lowest" if self.cpu.lowest else "normal"},
                "yields_to_training": self._gate is not None,
                "waiting_for_cpu": bool(held), "deferred_s": max(held, default=0.0),
                "max_deferral_s": None if self._gate is None else self._gate.max_wait_s,
                "free_cores": None if self._gate is None else self._gate.meter.free_cores(),
                "last_error": self._last_error, "last": self._last,
                "problems": list(self._problems), "device": self.device,
            }

    # -- feed side (producer's thread: must return at once) ----------------------------------

    def _on_changes(self, changes: Any) -> None:
        for change in changes:
            if self._gate is not None and change.kind in INGEST_KINDS:
                with self._lock:
                    if change.kind == ChangeKind.RUN_END:
                        self._gate.run_ended(change.run_id)
                    else:
                        self._gate.saw_training(change.run_id)
            if change.kind != ChangeKind.SNAPSHOT or change.message is None:
                continue
            snapshot = change.message
            with self._lock:
                for layer, features in projected_layers(snapshot.features, self.max_layers):
                    self._counts["received"] += 1
                    job = Job(change.run_id, layer, int(snapshot.step),
                              np.asarray(snapshot.sample_ids, np.int64), features,
                              time.monotonic())
                    if self._queue.put(job) is not None:
                        self._counts["skipped"] += 1
                self._lock.notify_all()

    # -- dispatch threads (one per engine slot) -----------------------------------------------

    def _slot_loop(self, slot: int) -> None:
        self._warm_up(slot)
        while True:
            job = self._next_job(slot)
            if job is None:
                return
            try:
                self._run(slot, job)
            except Exception as exc:  # the worker outlives any one bad job
                log.exception("projecting %s/%s step %d failed", job.run_id, job.layer, job.step)
                self._note_problem(job, f"{type(exc).__name__}: {exc}", "errors")
            finally:
                with self._lock:
                    self._queue.done(job)
                    if self._gate is not None:
                        self._gate.note_activity()
                    self._lock.notify_all()

    def _next_job(self, slot: int) -> Job | None:
        """The slot's next job, waiting for one (and, with a gate, for free CPU); None once
        stopping."""
        assert self.engine is not None

        def accepts(key: LayerKey) -> bool:
            return self.engine.accepts(slot, key)

        with self._lock:
            try:
                while not self._stopping.is_set():
                    job = self._queue.next_for(accepts)
                    if job is None:
                        self._held.pop(slot, None)
                    elif not self._holds(job):
                        if self._gate is not None:
                            self._gate.note_activity()
                        return self._queue.take(accepts)
                    else:
                        self._held[slot] = job.queued_at
                    self._lock.wait(POLL_S)
                return None
            finally:
                self._held.pop(slot, None)

    def _holds(self, job: Job) -> bool:
        """Whether the gate holds ``job`` back for now (caller holds the lock)."""
        return (self._gate is not None and not self._draining
                and self._gate.holds(job.queued_at))

    def _own_tasks(self) -> list[str]:
        """The stat files of what projects: the pool's worker processes, else the dispatch
        threads of this process (the thread engine projects on them)."""
        if self.engine is None:
            return []
        pids = getattr(self.engine, "pids", None)
        if pids is not None:
            return [f"/proc/{pid}/stat" for pid in pids()]
        return [f"/proc/self/task/{thread.native_id}/stat" for thread in self._threads
                if thread.native_id is not None]

    def _warm_up(self, slot: int) -> None:
        assert self.engine is not None
        try:
            self.engine.start_slot(slot)
        except Exception as exc:
            if not self._stopping.is_set():  # else: stopped while warming, nothing failed
                log.exception("projector warm-up failed")
                self._last_error = f"warm-up: {type(exc).__name__}: {exc}"
        with self._lock:
            self._warming -= 1
            if self._warming > 0:
                return
            self._status = "ready"
            self._lock.notify_all()
        self._publish_state()

    def _run(self, slot: int, job: Job) -> None:
        """Project ``job`` on ``slot`` (again on the replacement if its worker dies), store and
        publish the map, then its quality."""
        assert self.engine is not None
        request = self._request(job)
        if request is None:
            return
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._project(slot, job, request)
                return
            except ValueError as exc:  # NaN/Inf, dimension change, too few points, ...
                log.warning("snapshot %s/%s step %d not projectable: %s", job.run_id,
                            job.layer, job.step, exc)
                self._note_problem(job, str(exc), "not_projectable")
                return
            except WorkerLost as exc:
                if attempt == ATTEMPTS or self._stopping.is_set():
                    self._note_problem(job, f"{exc} ({attempt} tries)", "failed")
                    return
                log.warning("%s: projecting %s/%s step %d again", exc, *job.key, job.step)
                request = self._request(job)  # the layer resumes from its newest checkpoint

    def _request(self, job: Job) -> ProjectRequest | None:
        """What a worker needs for ``job``; None if the job's step is not newer than what the
        layer's checkpoint already covers (replayed after a restart)."""
        if job.key not in self._latest:
            checkpoint = self.store.latest_checkpoint(job.run_id, job.layer)
            self._latest[job.key] = None if checkpoint is None else Resume(*checkpoint)
            if checkpoint is not None:
                log.info("projector of %s/%s resumes at step %d", *job.key, checkpoint[0])
        resume = self._latest[job.key]
        if resume is not None and job.step <= resume.step:
            return None
        return ProjectRequest(job.key, job.step, job.ids, job.features, self._labels_of(job),
                              dict(self.projector_settings), self.device, resume)

    def _project(self, slot: int, job: Job, request: ProjectRequest) -> None:
        assert self.engine is not None
        projected = self.engine.project(slot, request)
        self.store.write_embedding(job.run_id, job.layer, job.step, job.ids, projected.coords,
                                   checkpoint=projected.checkpoint)
        self._latest[job.key] = Resume(job.step, projected.checkpoint)
        self.feed.publish([Change(job.run_id, ChangeKind.EMBEDDING, job.step, job.layer)])
        info = projected.info
        with self._lock:
            self._counts["projected"] += 1
            self._last = {"run_id": job.run_id, "layer": job.layer, "step": job.step,
                          "seconds": projected.seconds,
                          "latency_s": time.monotonic() - job.queued_at,
                          "fraction": info["fraction"], "n": info["n"]}
        try:
            values = self.engine.quality(slot, job.key)
        except (WorkerLost, RuntimeError) as exc:  # the map stands; only its quality is lost
            log.warning("quality of %s/%s step %d lost: %s", *job.key, job.step, exc)
            with self._lock:
                self._counts["quality_dropped"] += 1
            return
        self.store.write_quality(job.run_id, job.layer, job.step, values)
        self.feed.publish([Change(job.run_id, ChangeKind.QUALITY, job.step, job.layer)])
        with self._lock:
            self._counts["quality_written"] += 1

    def _labels_of(self, job: Job) -> np.ndarray | None:
        if job.run_id not in self._labels:
            probe = self.store.probe(job.run_id)
            if len(probe.get("sample_id", [])) == 0:
                return None  # the probe is not stored (yet): project without strata
            self._labels[job.run_id] = dict(zip(probe["sample_id"].tolist(),
                                                probe["label"].tolist()))
        labels = self._labels[job.run_id]
        return np.array([labels.get(int(i), -1) for i in job.ids], dtype=np.int64)

    def _note_problem(self, job: Job, reason: str, count: str) -> None:
        with self._lock:
            self._counts[count] += 1
            self._last_error = f"{job.run_id}/{job.layer} step {job.step}: {reason}"
            self._problems.append({"run_id": job.run_id, "layer": job.layer, "step": job.step,
                                   "kind": count, "reason": reason})
        self.feed.publish([Change(job.run_id, ChangeKind.PROJECTOR, job.step, job.layer,
                                  message={"kind": count, "reason": reason})])

    def _publish_state(self) -> None:
        self.feed.publish([Change("", ChangeKind.PROJECTOR, message={"state": self._status})])
