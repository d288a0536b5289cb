"""Fixtures of the push hub and dashboard tests: a real in-process server over a real store,
fed through its real ingest websocket; 2D maps written as the projector worker writes them."""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import numpy as np
import pytest
from websockets.sync.client import connect

from sentrycam.backend.feed import Change
from sentrycam.backend.settings import ServerSettings
from sentrycam.capture import wire
from sentrycam.protocol.messages import (SPLIT_TRAIN, LayerStats, ProbeSet, RunStart, Scalars,
                                        Snapshot, Status)
from sentrycam.frontend.frames import decode_frame
from sentrycam.backend.testing import RunningServer, isolate_environment, serve_in_thread

RUN = "run0001"
N_PROBE = 40
LAYER = "fc:input"


@pytest.fixture(autouse=True)
def _no_sentrycam_environment(monkeypatch):
    isolate_environment(monkeypatch)


@pytest.fixture
def server(tmp_path, store) -> Iterator[RunningServer]:
    with serve_in_thread(ServerSettings(db_path=tmp_path / "runs.duckdb", port=0), store) as s:
        yield s


class Ingest:
    """Sends messages through the server's ingest websocket and waits for their acks."""

    def __init__(self, server: RunningServer) -> None:
        self.server, self.seq = server, 0
        self.socket = connect(server.ws_url)

    def send(self, *messages: Any) -> None:
        for message in messages:
            self.seq += 1
            self.socket.send(wire.encode(message, self.seq, time.time()))
        deadline = time.monotonic() + 20
        while True:
            reply = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            assert reply["type"] == "ack", reply
            if reply["seq"] >= self.seq:
                return

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def ingest(server) -> Iterator[Ingest]:
    sender = Ingest(server)
    yield sender
    sender.close()


def labels() -> np.ndarray:
    return (np.arange(N_PROBE) % 4).astype(np.int64)


def start_run(ingest: Ingest, run_id: str = RUN, steps: int = 3) -> None:
    """A run with a probe of N_PROBE samples (4 classes), scalars and stats for ``steps``."""
    ids = np.arange(N_PROBE, dtype=np.int64)
    ingest.send(RunStart(run_id, "hub-test", time.time(), {}),
                ProbeSet(run_id, ids, labels(), np.full(N_PROBE, SPLIT_TRAIN, np.uint8)))
    for step in range(steps):
        train_step(ingest, step, run_id)


def train_step(ingest: Ingest, step: int, run_id: str = RUN) -> None:
    ingest.send(Scalars(run_id, step, time.time(), {"loss": 1.0 / (step + 1), "lr": 0.01}),
                LayerStats(run_id, step, ("conv", "fc"), ("grad_norm", "act_std"),
                           np.array([[step + 1.0, 0.5], [2.0, 0.25]], np.float32)))


def snapshot(ingest: Ingest, step: int, run_id: str = RUN) -> None:
    ids = np.arange(N_PROBE, dtype=np.int64)
    pred = labels().copy()
    pred[:5] = (pred[:5] + 1) % 4  # five wrong predictions
    ingest.send(Snapshot(run_id, step, 0, ids, {
        "pred": pred, "confidence": np.full(N_PROBE, 0.8, np.float32),
        "loss": np.linspace(0, 1, N_PROBE).astype(np.float32)},
        {LAYER: np.random.default_rng(step).normal(size=(N_PROBE, 6)).astype(np.float16)}),
        Status(run_id, step, dropped=2, spooled=0, overhead=0.004, snapshot_every=5,
               queue_depth=0))


def coords(step: int) -> np.ndarray:
    """A 2D map where class c sits around (10 c, step)."""
    rng = np.random.default_rng(step)
    centre = np.stack([labels() * 10.0, np.full(N_PROBE, float(step))], axis=1)
    return (centre + rng.normal(scale=0.5, size=(N_PROBE, 2))).astype(np.float32)


def project(server: RunningServer, step: int, run_id: str = RUN) -> np.ndarray:
    """Store the 2D map of ``step`` and announce it, exactly as the projector worker does."""
    xy = coords(step)
    server.store.write_embedding(run_id, LAYER, step, np.arange(N_PROBE, dtype=np.int64), xy)
    server.store.write_quality(run_id, LAYER, step, {"trustworthiness_15": 0.9})
    server.app.state.feed.publish([Change(run_id, "embedding", step, LAYER),
                                   Change(run_id, "quality", step, LAYER)])
    return xy


class Subscriber:
    """A websocket subscription to /ws/runs/{run_id} that decodes frames."""

    def __init__(self, server: RunningServer, run_id: str = RUN) -> None:
        self.socket = connect(f"ws://127.0.0.1:{server.port}/ws/runs/{run_id}", max_size=None)
        self.frames: list[tuple[dict, dict]] = []

    def until(self, predicate, timeout: float = 20.0) -> tuple[dict, dict]:
        """Receive frames until one satisfies ``predicate(header, arrays)``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no matching frame; got {[h['type'] for h, _ in self.frames]}"
            header, arrays = decode_frame(self.socket.recv(timeout=remaining))
            self.frames.append((header, arrays))
            if predicate(header, arrays):
                return header, arrays

    def until_type(self, frame_type: str, timeout: float = 20.0) -> tuple[dict, dict]:
        return self.until(lambda h, a: h["type"] == frame_type, timeout)

    def close(self) -> None:
        self.socket.close()
