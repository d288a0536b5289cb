"""The projector beside training: a pool worker at the lowest priority runs every thread of its
process in the idle class with bounded thread pools, and still draws maps."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from sentrycam.backend.feed import ChangeFeed
from sentrycam.backend.projection import ProjectionWorker
from sentrycam.backend.projection_pool import PoolEngine
from sentrycam.backend.projection_work import NICEST, CpuShare
from sentrycam.backend.settings import ServerSettings

from tests.backend.projection_feed import FAST, N, RUNS, WAIT_S, publish, start_runs
from tests.cpu_priority import SCHED_IDLE, thread_priorities


def test_the_projector_priority_and_threads_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTRYCAM_PROJECTOR_PRIORITY", "lowest")
    monkeypatch.setenv("SENTRYCAM_PROJECTOR_THREADS", "2")
    assert ServerSettings(db_path=tmp_path / "x.duckdb").projector_cpu == CpuShare(2, True)
    monkeypatch.delenv("SENTRYCAM_PROJECTOR_PRIORITY")
    monkeypatch.delenv("SENTRYCAM_PROJECTOR_THREADS")
    # A team server keeps its defaults: normal priority, threads sized by the pool.
    assert ServerSettings(db_path=tmp_path / "x.duckdb").projector_cpu == CpuShare(None, False)
    with pytest.raises(ValueError, match="normal|lowest"):
        ServerSettings(db_path=tmp_path / "x.duckdb", projector_priority="low")


@pytest.mark.projector
@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's idle class")
def test_a_lowest_priority_worker_runs_idle_with_one_thread_per_pool():
    engine = PoolEngine(1, threading.Event(), CpuShare(threads=1, lowest=True))
    try:
        engine.start_slot(0)  # the warm-up has started numba's, torch's and BLAS's threads
        inside = engine.cpu(0)
        [pid] = engine.pids()
        threads = thread_priorities(pid)
    finally:
        engine.stop()
    assert inside["nice"] == NICEST and inside["idle_class"]
    assert (inside["torch_threads"], inside["numba_threads"], inside["blas_threads"]) == (1, 1, 1)
    assert len(threads) > 1 and set(threads.values()) == {(NICEST, SCHED_IDLE)}, threads


@pytest.mark.projector
def test_a_lowest_priority_pool_still_draws_every_map(store):
    feed = ChangeFeed()
    worker = ProjectionWorker(store, feed, device="cpu", projector_settings=FAST,
                              engine="pool", workers=1, max_layers=0,
                              cpu=CpuShare(threads=1, lowest=True))
    labels = start_runs(store, RUNS[:1])
    worker.start()
    try:
        for step in (0, 10):
            publish(feed, RUNS[0], step, labels)
        assert worker.wait_idle(WAIT_S), worker.state()
        state = worker.state()
    finally:
        worker.stop(10.0)
    assert state["cpu"] == {"threads": 1, "priority": "lowest"}
    assert state["projected"] == 4 and state["failed"] == 0 and state["errors"] == 0, state
    ids, coords = store.embedding(RUNS[0], "conv", 10)
    assert np.array_equal(ids, np.arange(N)) and np.isfinite(coords).all()
