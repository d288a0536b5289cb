"""The projector on Ray: the extra named when missing, never imported by sentrycam itself, and
(slow, a local Ray) the same maps as the process pool."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import numpy as np
import pytest

from sentrycam.backend.feed import ChangeFeed
from sentrycam.backend.projection import ProjectionWorker
from sentrycam.backend.projection_ray import import_ray
from sentrycam.backend.store import Store

from tests.backend.projection_feed import FAST, RUNS, WAIT_S, publish, start_runs

RUN = RUNS[0]  # one run, one layer: one actor (each pays numba's warm-up in its process)

log = logging.getLogger(__name__)

#: Largest coordinate difference allowed between the pool's and Ray's maps, in map units
#: (the maps span tens of units). Both run the same seeded projector with one torch thread; the
#: margin covers float summation order in numba's parallel kNN.
TOLERANCE = 1e-3


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray shows
    with pytest.raises(ImportError, match=r"sentrycam\[ray\]"):
        import_ray()


def test_importing_sentrycam_and_its_server_never_imports_ray():
    code = ("import sys, sentrycam, sentrycam.backend.app, sentrycam.backend.projection; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _maps(store: Store, engine: str) -> dict[int, np.ndarray]:
    feed = ChangeFeed()
    worker = ProjectionWorker(store, feed, device="cpu", projector_settings=FAST,
                              engine=engine, workers=2, max_layers=1)
    labels = start_runs(store, runs=[RUN])
    started = time.perf_counter()
    worker.start()
    try:
        assert worker.wait_idle(WAIT_S), worker.state()
        log.warning("%s engine started and warm in %.1f s (Ray itself: %s s)", engine,
                    time.perf_counter() - started, getattr(worker.engine, "started_s", None))
        for step in (0, 10, 20):
            publish(feed, RUN, step, labels)
        assert worker.wait_idle(WAIT_S), worker.state()
        assert worker.state()["projected"] == 3, worker.state()
    finally:
        worker.stop(10.0)
    return {step: store.embedding(RUN, "fc", step)[1] for step in (0, 10, 20)}


@pytest.mark.projector
@pytest.mark.timeout(2 * WAIT_S + 300)  # two engines' warm-ups, each minutes when busy
def test_ray_actors_make_the_same_maps_as_the_process_pool(tmp_path):
    pytest.importorskip("ray")
    with Store(tmp_path / "pool.duckdb") as store:
        pooled = _maps(store, "pool")
    with Store(tmp_path / "ray.duckdb") as store:
        rayed = _maps(store, "ray")
    assert pooled.keys() == rayed.keys()
    for step in pooled:
        assert np.abs(pooled[step] - rayed[step]).max() <= TOLERANCE, step
