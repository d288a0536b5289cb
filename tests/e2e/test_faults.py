"""Fault tests through the real path: capture -> websocket -> `sentrycam serve` -> DuckDB.

The monitor must never crash or stall training, and no message may be lost or stored twice.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from torch import nn

from sentrycam import capture
from sentrycam.backend.store import Store
from sentrycam.capture import launcher

pytestmark = pytest.mark.slow

EVERY = 10


def _attach(trainer, url: str, **kwargs):
    return capture.attach(trainer.model, probe=(trainer.data.x_train, trainer.data.y_train),
                          criterion=trainer.criterion, optimizer=trainer.optimizer, url=url,
                          every=EVERY, overhead_budget=None, **kwargs)


def _loss_steps(store: Store, run_id: str) -> list[int]:
    return store.scalars(run_id, names=["loss"])["step"]


def _assert_complete(store: Store, run_id: str, steps: int) -> None:
    """Every step's loss exactly once, every snapshot exactly once per layer, run finished."""
    assert _loss_steps(store, run_id) == list(range(steps))
    index = store.snapshot_index(run_id)
    layers = {row["layer"] for row in index}
    assert len(layers) >= 2
    expected = {(step, layer) for step in range(0, steps, EVERY) for layer in layers}
    assert sorted((row["step"], row["layer"]) for row in index) == sorted(expected)
    summary = store.run_summaries(run_id)[0]
    assert summary["status"] == "finished"
    assert summary["last_step"] == steps - 1
    assert summary["dropped"] == 0


def test_server_killed_mid_run_and_restarted_loses_and_duplicates_nothing(
        server_process, trainer, in_tmp_cwd):
    server = server_process().start()
    run = _attach(trainer, server.url)
    trainer.train(45)
    deadline = time.monotonic() + 30
    while run.counters().acked == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.counters().acked > 0, "the server should have committed part of the run"
    server.kill()
    trainer.train(45)  # server down: messages go to the spool, training carries on
    restarted = server_process(db=server.db, port=server.port).start()
    trainer.train(30)
    run.detach()
    restarted.stop()
    with Store(server.db, read_only=True) as store:
        _assert_complete(store, run.run_id, 120)


def test_server_never_started_training_finishes_and_spool_replays(
        server_process, trainer, in_tmp_cwd):
    nobody = server_process()  # a free port where nothing listens (never started)
    run = _attach(trainer, nobody.url)
    started = time.perf_counter()
    trainer.train(60)
    run.detach()
    assert time.perf_counter() - started < 120  # bounded: close() gives up on the network
    assert trainer.steps_done == 60
    counters = run.counters()
    assert counters.spooled > 0 and counters.acked == 0
    spool = in_tmp_cwd / "sentrycam-runs" / "spool"
    assert any(spool.rglob("*")), "the spool should hold the run's messages"
    server = server_process(db=nobody.db, port=nobody.port).start()
    synced = subprocess.run([sys.executable, "-m", "sentrycam", "sync", "--url", server.url,
                             "--spool", str(spool)], capture_output=True, text=True, timeout=120)
    assert synced.returncode == 0, synced.stderr
    server.stop()
    with Store(server.db, read_only=True) as store:
        _assert_complete(store, run.run_id, 60)


class _Gate(nn.Module):
    """Passes its input through, except in eval mode once armed: then units 0/1 are NaN/Inf."""

    def __init__(self):
        super().__init__()
        self.armed = False

    def forward(self, h):
        if self.armed and not self.training:
            h = h.clone()
            h[:, 0] = math.nan
            h[:, 1] = math.inf
        return h


class _Poisoned(nn.Module):
    """An MLP whose hidden layer emits NaN/Inf during snapshots once armed (training stays finite)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32))
        self.hidden = _Gate()
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(torch.relu(self.hidden(self.body(x))))


def test_layer_emitting_nan_is_flagged_and_stored(server_process, trainer, in_tmp_cwd):
    server = server_process().start()
    model = _Poisoned()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = capture.attach(model, probe=(trainer.data.x_train, trainer.data.y_train), url=server.url,
                         layers=["hidden"], every=5, overhead_budget=None,
                         criterion=trainer.criterion, optimizer=optimizer)
    for step, (xb, yb, _) in zip(range(30), trainer.batches):
        # Armed from a snapshot step on: a snapshot's probe pass runs in slices over the steps
        # after it (capture/pacing.py) and reads a Python attribute as it is then.
        model.hidden.armed = step >= 15
        optimizer.zero_grad()
        trainer.criterion(model(xb), yb).backward()
        optimizer.step()
    run.detach()
    server.stop()
    with Store(server.db, read_only=True) as store:
        index = {row["step"]: row for row in store.snapshot_index(run.run_id) if row["layer"] == "hidden"}
        assert index[10]["nonfinite"] == 0
        assert index[15]["nonfinite"] > 0 and index[25]["nonfinite"] > 0
        _, features = store.features(run.run_id, 15, "hidden")
        assert not torch.isfinite(torch.from_numpy(features.astype("float32"))).all()
        assert any(event["event"] == "nonfinite" for event in store.events(run.run_id))
        assert store.run_summaries(run.run_id)[0]["status"] == "finished"


def test_full_queue_drops_are_counted_and_training_is_not_held(server_process, trainer, in_tmp_cwd):
    from sentrycam.capture.sender import WebSocketTransport

    server = server_process().start()
    transport = WebSocketTransport(server.url, "fullqueue", in_tmp_cwd / "spool", max_queue=2)
    run = capture.attach(trainer.model, probe=(trainer.data.x_train, trainer.data.y_train),
                         criterion=trainer.criterion, optimizer=trainer.optimizer,
                         transport=transport, every=1, overhead_budget=None)
    trainer.train(200)
    run.detach()
    counters = run.counters()
    server.stop()
    assert trainer.steps_done == 200
    assert counters.dropped > 0
    with Store(server.db, read_only=True) as store:
        stored = store.run_summaries()[0]
        # the server learns the drop count from status messages, which may themselves be dropped
        assert 0 < stored["dropped"] <= counters.dropped


def test_embedded_default_starts_one_server_and_reuses_it(trainer, in_tmp_cwd):
    probe = (trainer.data.x_train[:300], trainer.data.y_train[:300])
    first = capture.attach(trainer.model, probe=probe, criterion=trainer.criterion, every=10)
    try:
        assert first.url.startswith("http://127.0.0.1:") and launcher.server_health(first.url) is not None
        assert (in_tmp_cwd / "sentrycam-runs" / "sentrycam.duckdb").exists()
        trainer.train(20)
        other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        second = capture.attach(other, probe=probe)
        assert second.url == first.url
        second.detach()
        first.detach()
        with urllib.request.urlopen(f"{first.url}/api/runs", timeout=10) as response:
            runs = json.load(response)
        assert {r["run_id"] for r in runs} == {first.run_id, second.run_id}
    finally:
        launcher.stop_local_server(launcher.default_db_path())
