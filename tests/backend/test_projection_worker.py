"""The resident projector worker in a real server: snapshots in, stored maps and quality out."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from sentrycam.backend.feed import Change, ChangeFeed
from sentrycam.backend.projection import ProjectionWorker
from sentrycam.protocol import wire
from sentrycam.protocol.messages import ProbeSet, RunStart, Snapshot
from sentrycam.projector import Projector
from sentrycam.projector.graph import DEFAULT_K
from sentrycam.projector.quality import TEMPORAL_RANKING, neighbour_metric, trust_metric
from sentrycam.protocol.changes import ChangeKind
from sentrycam.backend.testing import serve_in_thread

# FAST: a step budget and no time limit (the server's default cuts training at a time budget):
# the maps and their quality do not depend on how busy the machine is.
from tests.backend.projection_feed import FAST, WAIT_S

RUN = "a1b2c3d4e5"
N = 120


def _snapshot(step: int, rng: np.random.Generator, labels: np.ndarray,
              nan: bool = False) -> Snapshot:
    centres = np.eye(4, 16)[labels] * 6.0
    wide = (centres + rng.normal(size=(N, 16))).astype(np.float16)
    narrow = (centres[:, :8] + rng.normal(size=(N, 8))).astype(np.float16)
    if nan:
        narrow[5, 2] = np.nan
    return Snapshot(RUN, step, 0, np.arange(N, dtype=np.int64),
                    {"pred": labels.astype(np.int64)}, {"conv": wide, "fc": narrow},
                    {"conv": 0, "fc": int(nan)})


def _stream(server, messages: list, first_seq: int = 0) -> None:
    """Send ``messages`` as a trainer would, letting the worker finish each snapshot (the
    skipping of a worker that is behind has its own test)."""
    worker = server.app.state.projection
    with connect(server.ws_url) as ws:
        for seq, message in enumerate(messages, first_seq):
            ws.send(wire.encode(message, seq, time.time()))
            if isinstance(message, Snapshot):
                time.sleep(0.2)
                server.wait_written()
                assert worker.wait_idle(WAIT_S), worker.state()


@pytest.fixture
def projecting_settings(make_settings):
    return make_settings(projector=True, projector_device="cpu")


def _worker_with_fast_projectors(app) -> ProjectionWorker:
    worker = app.state.projection
    worker.projector_settings.update(FAST)  # the test's budget, not the product's
    return worker


@pytest.mark.projector
@pytest.mark.timeout(3 * WAIT_S)  # two servers, each warming its pool's worker processes
def test_streamed_snapshots_get_maps_quality_and_survive_a_restart(projecting_settings, store):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, N).astype(np.int64)
    messages = [RunStart(RUN, "toy", 1.7e9, {}),
                ProbeSet(RUN, np.arange(N, dtype=np.int64), labels, np.zeros(N, np.uint8))]
    messages += [_snapshot(step, rng, labels, nan=step == 20) for step in (0, 10, 20, 30)]
    with serve_in_thread(projecting_settings, store) as server:
        worker = _worker_with_fast_projectors(server.app)
        _stream(server, messages)
        state = httpx.get(f"{server.url}/api/projector").json()
    assert state["state"] == "ready", state
    assert state["projected"] == 7 and state["not_projectable"] == 1, state
    assert state["problems"][0]["layer"] == "fc" and "NaN" in state["problems"][0]["reason"]
    index = store.embedding_index(RUN)
    assert [(row["step"], row["layer"]) for row in index] == [
        (0, "conv"), (0, "fc"), (10, "conv"), (10, "fc"), (20, "conv"), (30, "conv"), (30, "fc")]
    ids, coords = store.embedding(RUN, "conv", 30)
    assert np.array_equal(ids, np.arange(N)) and np.isfinite(coords).all()
    quality = store.projection_quality(RUN)
    assert {(step, layer) for step, layer in zip(quality["step"], quality["layer"])} == {
        (row["step"], row["layer"]) for row in index}
    conv30 = {m: v for s, l, m, v in zip(quality["step"], quality["layer"], quality["metric"],
                                         quality["value"]) if (s, l) == (30, "conv")}
    assert conv30[trust_metric(DEFAULT_K)] > 0.8 and 0 <= conv30[neighbour_metric(DEFAULT_K)] <= 1
    assert TEMPORAL_RANKING in conv30

    # A restarted server resumes each layer from its stored checkpoint.
    with serve_in_thread(projecting_settings, store) as server:
        worker = _worker_with_fast_projectors(server.app)
        _stream(server, [_snapshot(40, rng, labels)], first_seq=len(messages))
    step, state_bytes = store.latest_checkpoint(RUN, "conv")
    assert step == 40 and Projector.from_bytes(state_bytes).n_updates == 5
    assert Projector.from_bytes(store.latest_checkpoint(RUN, "fc")[1]).n_updates == 4


@pytest.mark.projector
def test_a_worker_behind_skips_to_the_newest_snapshot_and_says_so(store):
    feed = ChangeFeed()
    embedded = []
    feed.subscribe(lambda changes: embedded.extend(c for c in changes
                                                   if c.kind == ChangeKind.EMBEDDING))
    worker = ProjectionWorker(store, feed, device="cpu", projector_settings=FAST, max_backlog=1)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, N)
    store.write([(0, RunStart(RUN, "toy", 1.7e9, {})),
                 (1, ProbeSet(RUN, np.arange(N, dtype=np.int64), labels, np.zeros(N, np.uint8)))])
    worker.subscribe()  # jobs queue, nothing runs yet: the worker is "behind"
    for step in (0, 10, 20):
        feed.publish([Change(RUN, ChangeKind.SNAPSHOT, step, None, _snapshot(step, rng, labels))])
    state = worker.state()
    assert state["queue_depth"] == 2 and state["skipped"] == 4 and state["received"] == 6
    worker.start_threads()
    try:
        assert worker.wait_idle(WAIT_S), worker.state()
    finally:
        worker.stop(5.0)
    assert sorted((c.step, c.layer) for c in embedded) == [(20, "conv"), (20, "fc")]
    assert [row["step"] for row in store.embedding_index(RUN)] == [20, 20]


def test_the_projector_can_be_switched_off(make_settings, store):
    with serve_in_thread(make_settings(), store) as server:  # the test default: off
        assert httpx.get(f"{server.url}/api/projector").json() == {"state": "off"}
        assert server.app.state.projection is None
