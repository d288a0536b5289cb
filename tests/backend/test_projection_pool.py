"""The projector's process pool: several runs' layers in worker processes, a dead worker
replaced, no process left behind."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from sentrycam.backend.feed import ChangeFeed
from sentrycam.backend.projection import ProjectionWorker
from sentrycam.projector import Projector

from tests.backend.projection_feed import FAST, N, RUNS, WAIT_S, alive, publish, start_runs


@pytest.mark.projector
def test_a_pool_projects_runs_in_parallel_replaces_a_dead_worker_and_leaves_no_process(store):
    feed = ChangeFeed()
    worker = ProjectionWorker(store, feed, device="cpu", projector_settings=FAST,
                              engine="pool", workers=2, max_layers=0)
    labels = start_runs(store)
    worker.start()
    try:
        for step in (0, 10):
            for run_id in RUNS:
                publish(feed, run_id, step, labels)
        assert worker.wait_idle(WAIT_S), worker.state()
        pids = worker.engine.pids()
        assert len(pids) == 2 and os.getpid() not in pids
        state = worker.state()
        assert state["engine"] == "pool" and state["workers"] == 2
        assert state["projected"] == 8 and state["quality_written"] == 8, state

        os.kill(pids[0], signal.SIGKILL)  # a worker dies: its layers move to its replacement
        time.sleep(0.5)
        for run_id in RUNS:
            publish(feed, run_id, 20, labels)
        assert worker.wait_idle(WAIT_S), worker.state()
        state = worker.state()
        assert state["worker_restarts"] == 1 and state["projected"] == 12, state
        assert state["failed"] == 0 and state["errors"] == 0, state
        pids_after = worker.engine.pids()
    finally:
        worker.stop(10.0)
    for run_id in RUNS:
        for layer in ("conv", "fc"):
            step, checkpoint = store.latest_checkpoint(run_id, layer)
            # Warm-started in order: the replaced worker resumed from the stored checkpoint.
            assert step == 20 and Projector.from_bytes(checkpoint).n_updates == 3
            ids, coords = store.embedding(run_id, layer, 20)
            assert np.array_equal(ids, np.arange(N)) and np.isfinite(coords).all()
    assert not any(alive(pid) for pid in pids + pids_after)
