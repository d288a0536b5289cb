"""The projector's process pool: layers projected in worker processes on every core.

Each slot is one worker process (``spawn`` start method: the server holds DuckDB, threads and
sockets that a forked child must not inherit) talking to its dispatch thread over a pipe. A
worker receives features and returns coordinates, checkpoint and quality; it never opens the
store. The GIL of the server stays with ingest and the dashboards.

Each (run, layer) is pinned to one slot, the slot holding fewest layers when the layer first
shows up: its projector and its quality window (the last 8 snapshots' features) stay warm in
that process, so nothing larger than a snapshot crosses the pipe per job, and successive maps
are warm-started from their predecessor exactly as in a single process (this is also the Ray
engine's model: one actor per layer). Parallelism is across layers and runs. A worker that dies
is replaced (counted in ``restarts``); its layers resume from the server's newest checkpoint,
which the request carries whenever the slot's process does not hold the layer. Each worker
confines itself as it starts (:class:`~sentrycam.backend.projection_work.CpuShare`: its thread
pools, and the idle class for a server beside training).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import traceback
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from sentrycam.backend.projection_work import (CpuShare, LayerKey, LayerWork, Projected,
                                               ProjectRequest, WorkerLost, confine, cpu_report,
                                               warm_up_projector)

log = logging.getLogger(__name__)

#: Seconds the workers get to exit after being asked, and again after SIGTERM.
EXIT_WAIT_S = 5.0


def serve(conn: Connection, share: CpuShare) -> None:
    """A worker process's loop: ``(operation, argument)`` in, ``(outcome, value)`` out, until
    None or the server's end of the pipe closes (the server died: no orphan stays). ``share``
    is applied first, before the worker starts any thread, so that all of them inherit it."""
    confine(share)
    layers: dict[LayerKey, LayerWork] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        operation, argument = message
        try:
            conn.send(("ok", _handle(layers, operation, argument, share)))
        except ValueError as exc:  # a snapshot the projector refuses: the worker carries on
            conn.send(("refused", str(exc)))
        except Exception:
            conn.send(("error", traceback.format_exc()))


def _handle(layers: dict[LayerKey, LayerWork], operation: str, argument: Any,
            share: CpuShare) -> Any:
    if operation == "warm":
        return warm_up_projector(share.threads)
    if operation == "project":
        request: ProjectRequest = argument
        work = layers.get(request.key)
        if work is None:
            work = layers[request.key] = LayerWork.for_request(request)
        return work.project(request.ids, request.features, request.labels)
    if operation == "quality":
        return layers[argument].quality()
    if operation == "cpu":
        return cpu_report()
    raise ValueError(f"unknown operation {operation!r}")


class _Worker:
    """One worker process and the server's end of its pipe; ``holds``: the layers whose warm
    state the process has."""

    def __init__(self, slot: int, share: CpuShare) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(child, share), daemon=True,
                                       name=f"sentrycam-projector-{slot}")
        self.process.start()
        child.close()  # only the child holds its end: its death reads as EOF here
        self.holds: set[LayerKey] = set()

    def call(self, operation: str, argument: Any = None) -> Any:
        try:
            self.conn.send((operation, argument))
            outcome, value = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.process.join(EXIT_WAIT_S)
            raise WorkerLost(f"projector worker {self.process.pid} died (exit code "
                             f"{self.process.exitcode})") from exc
        if outcome == "refused":
            raise ValueError(value)
        if outcome == "error":
            raise RuntimeError(f"in projector worker {self.process.pid}:\n{value}")
        return value

    def ask_to_exit(self) -> None:
        """Ask the process to exit once its current job is done."""
        try:
            self.conn.send(None)
        except OSError:
            pass  # already gone

    def stop(self, deadline: float) -> None:
        """Wait for the process to exit until ``deadline`` (monotonic), then terminate it."""
        self.process.join(max(0.0, deadline - time.monotonic()))
        if self.process.is_alive():  # busy with a long job: stop it
            self.process.terminate()
            self.process.join(EXIT_WAIT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(EXIT_WAIT_S)
        self.conn.close()


class PoolEngine:
    """``slots`` worker processes (see module doc); each uses ``share.threads`` compute
    threads, by default ``cores // slots`` (at least 1), and runs at the lowest CPU priority
    when ``share.lowest``."""

    kind = "pool"

    def __init__(self, slots: int, stopping: threading.Event,
                 share: CpuShare = CpuShare()) -> None:
        self.slots = slots
        self.restarts = 0
        self._stopping = stopping
        self._share = replace(share, threads=share.threads
                              or max(1, (os.cpu_count() or 1) // slots))
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._owners: dict[LayerKey, int] = {}

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        with self._lock:
            return [w.process.pid for w in self._workers.values() if w.process.is_alive()]

    def cpu(self, slot: int) -> dict[str, Any]:
        """The slot's worker's priority and thread counts (:func:`cpu_report`)."""
        return self._worker(slot).call("cpu")

    def start_slot(self, slot: int) -> None:
        """Start the slot's worker process and warm it up (blocks for the warm-up)."""
        worker = _Worker(slot, self._share)
        with self._lock:
            if self._stopping.is_set():
                worker.ask_to_exit()
                worker.stop(time.monotonic() + EXIT_WAIT_S)
                return
            self._workers[slot] = worker
        worker.call("warm")
        log.info("projector worker %d (pid %d) ready", slot, worker.process.pid)

    def accepts(self, slot: int, key: LayerKey) -> bool:
        with self._lock:
            if key not in self._owners:
                load = {s: 0 for s in range(self.slots)}
                for owner in self._owners.values():
                    load[owner] += 1
                self._owners[key] = min(load, key=lambda s: (load[s], s))
            return self._owners[key] == slot

    def _worker(self, slot: int) -> _Worker:
        with self._lock:
            worker = self._workers.get(slot)
        if worker is None:  # its start failed, or the pool is stopping
            raise WorkerLost(f"projector worker {slot} is not running")
        return worker

    def project(self, slot: int, request: ProjectRequest) -> Projected:
        worker = self._worker(slot)
        if request.key in worker.holds:
            request = replace(request, resume=None)  # the process has it warm
        try:
            projected = worker.call("project", request)
        except WorkerLost:
            self._replace(slot, worker)
            raise
        worker.holds.add(request.key)
        return projected

    def quality(self, slot: int, key: LayerKey) -> dict[str, float]:
        worker = self._worker(slot)
        try:
            return worker.call("quality", key)
        except WorkerLost:
            self._replace(slot, worker)
            raise

    def _replace(self, slot: int, dead: _Worker) -> None:
        dead.stop(time.monotonic())
        if self._stopping.is_set():
            return
        with self._lock:
            self.restarts += 1
        log.warning("projector worker %d died (exit code %s): starting another",
                    slot, dead.process.exitcode)
        self.start_slot(slot)

    def stop(self) -> None:
        """Ask every worker to exit, give them :data:`EXIT_WAIT_S` together, then terminate
        those still busy."""
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.ask_to_exit()
        deadline = time.monotonic() + EXIT_WAIT_S
        for worker in workers:
            worker.stop(deadline)
