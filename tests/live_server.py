"""A real in-process server over a real store, fed through its real ingest websocket, for the
backend's route and push-hub tests and the dashboard tests; registered as a pytest plugin by
the root conftest, so its fixtures (``make_settings``, ``server``, ``ingest``) serve every folder.

A small run: ``N_PROBE`` probe samples of 4 classes, scalars and layer statistics per step,
snapshots of one layer (``LAYER``). :func:`project` writes a 2D map as the projector worker
does, with the quality metrics the worker's :class:`QualityWindow` computes for it.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import numpy as np
import pytest
from websockets.sync.client import connect

from sentrycam.backend.feed import Change
from sentrycam.backend.settings import ServerSettings
from sentrycam.protocol import signals, wire
from sentrycam.protocol.messages import (SPLIT_TRAIN, LayerStats, ProbeSet, RunStart, Scalars,
                                        Snapshot, Status)
from sentrycam.protocol.push import PushHeader, decode
from sentrycam.backend.testing import RunningServer, isolate_environment, serve_in_thread
from sentrycam.projector.quality import QualityWindow
from sentrycam.protocol.changes import ChangeKind

RUN = "run0001"
N_PROBE = 40
N_CLASSES = 4
LAYER = "fc:input"
FEATURE_DIM = 6
WRONG_PREDICTIONS = 5
ACK_TIMEOUT_S = 20.0


@pytest.fixture
def make_settings(tmp_path, monkeypatch):
    """``make_settings(**overrides)``: ServerSettings for a store in tmp_path, on a free port,
    from the test's arguments only (no SENTRYCAM_* variable of the caller's shell)."""
    isolate_environment(monkeypatch)

    def make(**overrides: Any) -> ServerSettings:
        return ServerSettings(**{"db_path": tmp_path / "runs.duckdb", "port": 0, **overrides})
    return make


@pytest.fixture
def server(make_settings, store) -> Iterator[RunningServer]:
    """The app serving the ``store`` fixture's file, in this process."""
    with serve_in_thread(make_settings(), store) as running:
        yield running


class Ingest:
    """Sends messages through the server's ingest websocket and waits for their acks
    (``token``: the server's write token, when it has one).

    Numbers each run's messages 0, 1, 2, ... as a trainer does (the server stores a run's
    messages only in that order)."""

    def __init__(self, server: RunningServer, token: str | None = None) -> None:
        self.server = server
        self.seqs: dict[str, int] = {}  # the last seq sent, per run
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.socket = connect(server.ws_url, additional_headers=headers)

    def send(self, *messages: Any) -> None:
        """Send ``messages``; return once the server acknowledged (stored) each run's last."""
        waiting: dict[str, int] = {}
        for message in messages:
            seq = self.seqs[message.run_id] = self.seqs.get(message.run_id, -1) + 1
            waiting[message.run_id] = seq
            self.socket.send(wire.encode(message, seq, time.time()))
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while waiting:
            reply = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            assert reply["type"] == "ack", reply
            if reply["seq"] >= waiting.get(reply["run_id"], reply["seq"] + 1):
                del waiting[reply["run_id"]]

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def ingest(server) -> Iterator[Ingest]:
    sender = Ingest(server)
    yield sender
    sender.close()


def labels() -> np.ndarray:
    """Class of each probe sample: int64 [N_PROBE], 0..N_CLASSES-1 in turn."""
    return (np.arange(N_PROBE) % N_CLASSES).astype(np.int64)


def start_run(ingest: Ingest, run_id: str = RUN, steps: int = 3) -> None:
    """A run with a probe of N_PROBE samples, scalars and stats for steps 0..steps-1."""
    ids = np.arange(N_PROBE, dtype=np.int64)
    ingest.send(RunStart(run_id, "hub-test", time.time(), {}),
                ProbeSet(run_id, ids, labels(), np.full(N_PROBE, SPLIT_TRAIN, np.uint8)))
    for step in range(steps):
        train_step(ingest, step, run_id)


def train_step(ingest: Ingest, step: int, run_id: str = RUN) -> None:
    """Scalars (loss 1/(step+1), lr) and layer stats of layers conv and fc for ``step``."""
    scalars = {signals.LOSS.name: 1.0 / (step + 1), signals.LR.name: 0.01}
    ingest.send(Scalars(run_id, step, time.time(), scalars),
                LayerStats(run_id, step, ("conv", "fc"),
                           (signals.LAYER_GRAD_NORM.name, signals.ACT_STD.name),
                           np.array([[step + 1.0, 0.5], [2.0, 0.25]], np.float32)))


def features(step: int) -> np.ndarray:
    """The snapshot's features of LAYER at ``step``: float16 [N_PROBE, FEATURE_DIM]."""
    return np.random.default_rng(step).normal(size=(N_PROBE, FEATURE_DIM)).astype(np.float16)


def snapshot(ingest: Ingest, step: int, run_id: str = RUN) -> None:
    """A snapshot of LAYER with WRONG_PREDICTIONS wrong predictions, then a status message."""
    ids = np.arange(N_PROBE, dtype=np.int64)
    pred = labels().copy()
    pred[:WRONG_PREDICTIONS] = (pred[:WRONG_PREDICTIONS] + 1) % N_CLASSES
    ingest.send(Snapshot(run_id, step, 0, ids, {
        "pred": pred, "confidence": np.full(N_PROBE, 0.8, np.float32),
        "loss": np.linspace(0, 1, N_PROBE).astype(np.float32)}, {LAYER: features(step)}),
        Status(run_id, step, dropped=2, spooled=0, overhead=0.004, snapshot_every=5,
               queue_depth=0))


def coords(step: int) -> np.ndarray:
    """A 2D map float32 [N_PROBE, 2] where class c sits around (10 c, step)."""
    rng = np.random.default_rng(step)
    centre = np.stack([labels() * 10.0, np.full(N_PROBE, float(step))], axis=1)
    return (centre + rng.normal(scale=0.5, size=(N_PROBE, 2))).astype(np.float32)


def quality(step: int) -> dict[str, float]:
    """The quality metrics the projector worker computes for the map of ``step``."""
    window = QualityWindow()
    window.add(np.arange(N_PROBE, dtype=np.int64), features(step), coords(step))
    return window.metrics()


def project(server: RunningServer, step: int, run_id: str = RUN) -> np.ndarray:
    """Store the 2D map of ``step`` and its quality and announce both, as the projector
    worker does; returns the map."""
    xy = coords(step)
    server.store.write_embedding(run_id, LAYER, step, np.arange(N_PROBE, dtype=np.int64), xy)
    server.store.write_quality(run_id, LAYER, step, quality(step))
    server.app.state.feed.publish([Change(run_id, ChangeKind.EMBEDDING, step, LAYER),
                                   Change(run_id, ChangeKind.QUALITY, step, LAYER)])
    return xy


class Subscriber:
    """A websocket subscription to /ws/runs/{run_id} that decodes frames. ``close_timeout``:
    how long :meth:`close` waits for the server's close reply (websockets' default 10 s)."""

    def __init__(self, server: RunningServer, run_id: str = RUN,
                 close_timeout: float = 10.0) -> None:
        self.socket = connect(f"ws://127.0.0.1:{server.port}/ws/runs/{run_id}", max_size=None,
                              close_timeout=close_timeout)
        self.frames: list[tuple[PushHeader, dict]] = []

    def until(self, predicate, timeout: float = 20.0) -> tuple[PushHeader, dict]:
        """Receive frames until one satisfies ``predicate(header, arrays)``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no matching frame; got {[h.type for h, _ in self.frames]}"
            header, arrays = decode(self.socket.recv(timeout=remaining))
            self.frames.append((header, arrays))
            if predicate(header, arrays):
                return header, arrays

    def until_type(self, frame_type: str, timeout: float = 20.0) -> tuple[PushHeader, dict]:
        return self.until(lambda h, a: h.type == frame_type, timeout)

    def close(self) -> None:
        self.socket.close()
