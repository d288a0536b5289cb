"""The resident projector worker: every new snapshot of every layer becomes a stored 2D map.

It subscribes to the change feed for ``snapshot`` changes and keeps one
:class:`~sentrycam.projector.Projector` per (run_id, layer), resumed from the store's newest
checkpoint after a restart. Ingest never waits for it: the feed callback only queues the job. A job
waits behind at most ``max_backlog`` others of its layer; beyond that the oldest waiting one is
skipped (counted and logged). Only the deepest ``max_layers`` layers of each snapshot are
projected (all with 0), so a CPU-only server keeps up with a trainer. Per job: project, store the
coords and the projector checkpoint, publish ``embedding``; then a second thread computes the
quality metrics off the latency path, stores them and publishes ``quality``. A snapshot the
projector refuses (NaN/Inf features, a dimension change) is marked not projectable and the
worker carries on. numba is compiled once at start, in the background (state ``warming``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from sentrycam.backend.feed import Change, ChangeFeed
from sentrycam.backend.store import Store
from sentrycam.protocol.changes import ChangeKind

log = logging.getLogger(__name__)

QUALITY_QUEUE = 64
#: Per-snapshot training budget in the server: latency stays bounded on a busy machine.
SERVER_PROJECTOR_SETTINGS = {"time_limit_s": 4.0, "first_time_limit_s": 30.0}
RECENT_PROBLEMS = 20


@dataclass(frozen=True)
class Job:
    """One layer of one snapshot: ids int64 [N], features [N, D] (as captured)."""

    run_id: str
    layer: str
    step: int
    ids: np.ndarray
    features: np.ndarray
    queued_at: float


def projected_layers(features: dict[str, Any], max_layers: int) -> list[tuple[str, Any]]:
    """The (layer, features) pairs to project: the deepest ``max_layers`` layers of a snapshot
    (capture lists layers in model order), all of them when ``max_layers`` is 0."""
    layers = list(features.items())
    return layers if max_layers <= 0 else layers[-max_layers:]


class ProjectionWorker:
    """Background projection of snapshots (see module doc). ``start()``/``stop(timeout)``;
    :meth:`state` is what ``GET /api/projector`` shows."""

    def __init__(self, store: Store, feed: ChangeFeed, *, device: str = "auto",
                 projector_settings: dict[str, Any] | None = None, max_layers: int = 2,
                 max_backlog: int = 12) -> None:
        self.store, self.feed, self.device = store, feed, device
        self.projector_settings = {**SERVER_PROJECTOR_SETTINGS, **(projector_settings or {})}
        self.max_layers, self.max_backlog = max_layers, max_backlog
        self._lock = threading.Condition()
        self._pending: deque[Job] = deque()
        self._quality: queue.Queue = queue.Queue(QUALITY_QUEUE)
        self._projectors: dict[tuple[str, str], Any] = {}
        self._resumed_at: dict[tuple[str, str], int] = {}
        self._windows: dict[tuple[str, str], Any] = {}
        self._labels: dict[str, dict[int, int]] = {}
        self._status = "stopped"
        self._busy_with: tuple[str, str, int] | None = None
        self._stopping = False
        self._counts = {"received": 0, "projected": 0, "skipped": 0, "not_projectable": 0,
                        "errors": 0, "quality_written": 0, "quality_dropped": 0}
        self._last_error: str | None = None
        self._last: dict[str, Any] | None = None
        self._problems: deque[dict[str, Any]] = deque(maxlen=RECENT_PROBLEMS)
        self._threads: list[threading.Thread] = []
        self._subscription = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the feed and start the threads (warm-up first)."""
        self.subscribe()
        self.start_threads()

    def subscribe(self) -> None:
        """Start taking snapshot jobs from the feed (they queue until the threads run)."""
        self._status = "warming"
        self._subscription = self.feed.subscribe(self._on_changes, name="projector")

    def start_threads(self) -> None:
        for target, name in ((self._project_loop, "sentrycam-projector"),
                             (self._quality_loop, "sentrycam-projector-quality")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> bool:
        """Finish queued work for up to ``timeout`` s, then stop. True if all was done."""
        if self._subscription is not None:
            self._subscription.close()
        drained = self.wait_idle(timeout)
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._quality.put(None)
        for thread in self._threads:
            thread.join(timeout=5.0)
            if thread.is_alive():  # e.g. still compiling numba: it is a daemon, let it go
                log.warning("%s did not stop within 5 s", thread.name)
        self._status = "stopped"
        if not drained:
            log.warning("projector stopped with work left: %s", self.state())
        return drained

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or in progress (quality included); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = (not self._pending and self._busy_with is None
                        and self._status != "warming")
            if idle and self._quality.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False

    def state(self) -> dict[str, Any]:
        with self._lock:
            oldest = min((job.queued_at for job in self._pending), default=None)
            busy = self._busy_with
            return {
                "state": "busy" if busy and self._status == "ready" else self._status,
                "queue_depth": len(self._pending),
                "behind_by_s": 0.0 if oldest is None else time.monotonic() - oldest,
                "busy_with": None if busy is None else dict(zip(("run_id", "layer", "step"),
                                                                busy)),
                "quality_queue": self._quality.qsize(), **self._counts,
                "last_error": self._last_error, "last": self._last,
                "problems": list(self._problems), "device": self.device,
            }

    # -- feed side (producer's thread: must return at once) ----------------------------------

    def _on_changes(self, changes: Any) -> None:
        for change in changes:
            if change.kind != ChangeKind.SNAPSHOT or change.message is None:
                continue
            snapshot = change.message
            with self._lock:
                for layer, features in projected_layers(snapshot.features, self.max_layers):
                    self._enqueue(Job(change.run_id, layer, int(snapshot.step),
                                      np.asarray(snapshot.sample_ids, np.int64), features,
                                      time.monotonic()))
                self._lock.notify_all()

    def _enqueue(self, job: Job) -> None:
        """Queue ``job``; beyond ``max_backlog`` waiting snapshots of its (run, layer), the
        oldest waiting one is skipped: a worker that is behind jumps to the newest."""
        self._counts["received"] += 1
        same_layer = [j for j in self._pending if (j.run_id, j.layer) == (job.run_id, job.layer)]
        if len(same_layer) >= self.max_backlog:
            oldest = same_layer[0]
            self._pending.remove(oldest)
            self._counts["skipped"] += 1
            log.info("projector behind: skipping step %d of %s/%s (step %d arrived)",
                     oldest.step, job.run_id, job.layer, job.step)
        self._pending.append(job)

    # -- projection thread --------------------------------------------------------------------

    def _project_loop(self) -> None:
        self._warm_up()
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait(0.5)
                if self._stopping:
                    return
                job = self._pending.popleft()
                self._busy_with = (job.run_id, job.layer, job.step)
            try:
                self._project(job)
            except Exception as exc:  # the worker outlives any one bad job
                log.exception("projecting %s/%s step %d failed", job.run_id, job.layer, job.step)
                self._note_problem(job, f"{type(exc).__name__}: {exc}", "errors")
            finally:
                with self._lock:
                    self._busy_with = None

    def _warm_up(self) -> None:
        try:
            from sentrycam.projector import warm_up

            warm_up()
        except Exception as exc:
            log.exception("projector warm-up failed")
            self._last_error = f"warm-up: {type(exc).__name__}: {exc}"
        with self._lock:
            self._status = "ready"
        self._publish_state()

    def _project(self, job: Job) -> None:
        projector = self._projector_for(job)
        if projector is None:
            return
        started = time.perf_counter()
        try:
            coords = projector.update(job.features, job.ids, self._labels_of(job))
        except ValueError as exc:  # NaN/Inf, dimension change, too few points, ...
            log.warning("snapshot %s/%s step %d not projectable: %s", job.run_id, job.layer,
                        job.step, exc)
            self._note_problem(job, str(exc), "not_projectable")
            return
        self.store.write_embedding(job.run_id, job.layer, job.step, job.ids, coords,
                                   checkpoint=projector.to_bytes())
        seconds = time.perf_counter() - started
        self.feed.publish([Change(job.run_id, ChangeKind.EMBEDDING, job.step, job.layer)])
        info = projector.last_info
        with self._lock:
            self._counts["projected"] += 1
            self._last = {"run_id": job.run_id, "layer": job.layer, "step": job.step,
                          "seconds": seconds, "latency_s": time.monotonic() - job.queued_at,
                          "fraction": info["fraction"], "n": info["n"]}
        try:
            self._quality.put_nowait((job, coords, seconds, info["fraction"]))
        except queue.Full:
            self._counts["quality_dropped"] += 1

    def _projector_for(self, job: Job) -> Any:
        """The (run, layer)'s projector, resumed from its checkpoint; None if the job's step is
        not newer than what the checkpoint already covers."""
        from sentrycam.projector import Projector

        key = (job.run_id, job.layer)
        if key not in self._projectors:
            checkpoint = self.store.latest_checkpoint(job.run_id, job.layer)
            if checkpoint is not None:
                self._projectors[key] = Projector.from_bytes(checkpoint[1], device=self.device)
                self._resumed_at[key] = checkpoint[0]
                log.info("projector of %s/%s resumed at step %d", *key, checkpoint[0])
            else:
                self._projectors[key] = Projector(seed=0, device=self.device,
                                                  **self.projector_settings)
        if job.step <= self._resumed_at.get(key, -1):
            return None  # replayed after a restart: already projected
        return self._projectors[key]

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

    # -- quality thread -----------------------------------------------------------------------

    def _quality_loop(self) -> None:
        from sentrycam.projector.quality import QualityWindow

        while True:
            item = self._quality.get()
            try:
                if item is None:
                    return
                job, coords, seconds, fraction = item
                window = self._windows.setdefault((job.run_id, job.layer), QualityWindow())
                window.add(job.ids, job.features, coords)
                values = {**window.metrics(), "update_s": seconds, "sample_fraction": fraction}
                self.store.write_quality(job.run_id, job.layer, job.step, values)
                self.feed.publish([Change(job.run_id, ChangeKind.QUALITY, job.step,
                                          job.layer)])
                with self._lock:
                    self._counts["quality_written"] += 1
            except Exception as exc:
                log.exception("projection quality failed")
                with self._lock:
                    self._counts["errors"] += 1
                    self._last_error = f"quality: {type(exc).__name__}: {exc}"
            finally:
                self._quality.task_done()
