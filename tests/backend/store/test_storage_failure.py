"""A full disk under a real DuckDB store, its ingest writer and its server: a storage failure
is told apart from a bad message, answered "retry later", shown on /health, and over once
there is room again, with every earlier commit kept.

The disk is a real one: a tmpfs of a few MiB filled with a filler file (as root), or else a
file-size limit on this process (RLIMIT_FSIZE), under which DuckDB's writes fail the same way.
"""

from __future__ import annotations

import contextlib
import html
import json
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from sentrycam.backend.ingest import IngestWriter
from sentrycam.backend.store import Store, StoreUnavailableError
from sentrycam.backend.testing import serve_in_thread
from sentrycam.frontend.client import ApiClient
from sentrycam.frontend.state_views import StatusView
from sentrycam.protocol import wire
from sentrycam.protocol.messages import RunStart, Scalars, Snapshot
from tests.full_disk import SmallDisk, file_size_limit

RUN = "d15cf011" * 4
N = 256  # probe samples per snapshot
DIM = 64


def snapshot(step: int, rng: np.random.Generator) -> Snapshot:
    feats = rng.standard_normal((N, DIM)).astype(np.float16)
    return Snapshot(RUN, step, 0, np.arange(N, dtype=np.int64), {}, {"fc:input": feats})


def opening(rng: np.random.Generator, steps: int = 10) -> list[tuple[int, object]]:
    """Seq 0: the RunStart; seqs 1..steps: a snapshot each (step = seq)."""
    return [(0, RunStart(RUN, "full-disk", 1000.0))] + [
        (seq, snapshot(seq, rng)) for seq in range(1, steps + 1)]


class FullDisk:
    """The folder of the test's database, and how to make its disk full and free it again:
    a tmpfs with a filler file, or a file-size limit on this process."""

    def __init__(self, folder: Path, how: str) -> None:
        self.folder, self.how = folder, how
        self._limit: contextlib.ExitStack | None = None
        self._disk: SmallDisk | None = None

    @property
    def db(self) -> Path:
        return self.folder / "runs.duckdb"

    def fill(self) -> None:
        if self._disk is not None:
            self._disk.fill()
        else:  # no file may grow: neither the log nor the database file
            self._limit = contextlib.ExitStack()
            self._limit.enter_context(file_size_limit(self.db.stat().st_size))

    def free(self) -> None:
        if self._disk is not None:
            self._disk.free()
        elif self._limit is not None:
            self._limit.close()
            self._limit = None


@pytest.fixture(params=["tmpfs", "file-size-limit"])
def disk(request, tmp_path) -> Iterator[FullDisk]:
    if request.param == "tmpfs":
        reason = SmallDisk.why_not()
        if reason:
            pytest.skip(f"{reason}; the file-size-limit variant covers this machine")
        full = FullDisk(tmp_path / "disk", "tmpfs")
        with SmallDisk(full.folder, 8) as small:
            full._disk = small
            try:
                yield full
            finally:
                full.free()
        return
    full = FullDisk(tmp_path / "disk", "file-size-limit")
    full.folder.mkdir()
    try:
        yield full
    finally:
        full.free()


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_a_full_disk_fails_commits_not_data_and_the_store_recovers_with_every_commit(disk, rng):
    with Store(disk.db) as store:
        assert store.write(opening(rng)) == {RUN: 10}
        disk.fill()
        with pytest.raises(StoreUnavailableError, match="cannot be written now") as caught:
            store.write([(11, snapshot(11, rng))])
        assert store.failure is not None
        assert any(word in store.failure.reason for word in ("No space left", "File too large"))
        assert str(store.failure.reason) in str(caught.value)
        # The failed commit left the store as it was, and it still reads.
        assert store.run_summaries(RUN)[0]["last_step"] == 10
        # Still full: trying again fails, and the checkpoint it takes invalidates DuckDB's
        # database: reads now say why instead of failing obscurely.
        assert store.recover() is False
        with pytest.raises(StoreUnavailableError, match="cannot be written now"):
            store.run_summaries()
        disk.free()
        assert store.recover() is True and store.failure is None
        summary = store.run_summaries(RUN)[0]
        assert (summary["last_step"], summary["n_snapshots"]) == (10, 10)  # nothing lost
        assert store.write([(11, snapshot(11, rng))]) == {RUN: 11}
        assert store.snapshot_index(RUN)[-1]["step"] == 11


class Sink:
    """Records what the writer answers, as a connection would."""

    def __init__(self) -> None:
        self.acks: dict[str, int] = {}
        self.errors: list[dict] = []
        self.lock = threading.Lock()

    def ack(self, run_id: str, seq: int) -> None:
        with self.lock:
            self.acks[run_id] = seq

    def error(self, run_id: str, seq: int, problem: str, expected_seq: int | None = None,
              retry: bool = False) -> None:
        with self.lock:
            self.errors.append({"run_id": run_id, "seq": seq, "problem": problem,
                                "retry": retry})


def test_the_writer_answers_a_bad_message_with_an_error_and_a_storage_failure_with_retry(
        disk, rng):
    with Store(disk.db) as store:
        writer = IngestWriter(store, batch_wait_s=0.01)
        writer.start()
        sink = Sink()
        try:
            for seq, message in opening(rng, steps=3):
                assert writer.try_submit(sink, seq, message)
            # A message the store cannot take for what it holds: its own fault, not storage's.
            assert writer.try_submit(sink, 4, Scalars(RUN, 4, 1.0, {"loss": "not a number"}))
            assert writer.wait_idle(10)
            assert sink.acks == {RUN: 3}
            assert [(e["seq"], e["retry"]) for e in sink.errors] == [(4, False)]
            assert store.failure is None
            disk.fill()
            sink.errors.clear()
            for seq in range(4, 8):
                assert writer.try_submit(sink, seq, snapshot(seq, rng))
            assert writer.wait_idle(10)
            assert sink.acks == {RUN: 3}  # nothing acknowledged that was not stored
            assert sorted(e["seq"] for e in sink.errors) == [4, 5, 6, 7]
            assert all(e["retry"] for e in sink.errors)
            assert "cannot store messages now" in sink.errors[0]["problem"]
            assert writer.stats()["retry_later"] == 4 and store.failure is not None
            disk.free()
            # The same messages again, as the client resends them, until the writer's retry
            # (after its backoff) commits them.
            deadline = time.monotonic() + 30
            while sink.acks.get(RUN) != 7:
                assert time.monotonic() < deadline, sink.errors[-3:]
                for seq in range(4, 8):
                    assert writer.try_submit(sink, seq, snapshot(seq, rng))
                assert writer.wait_idle(10)
                time.sleep(0.2)
            assert store.failure is None
            assert [s["step"] for s in store.snapshot_index(RUN)] == [1, 2, 3, 4, 5, 6, 7]
        finally:
            writer.stop()


def test_the_server_says_503_with_the_reason_while_its_disk_is_full_and_200_after(
        disk, rng, make_settings):
    with serve_in_thread(make_settings(db_path=disk.db)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as http, \
            connect(server.ws_url) as socket:
        for seq, message in opening(rng, steps=3):
            socket.send(wire.encode(message, seq, time.time()))
        assert _replies_until(socket, lambda r: r["type"] == "ack" and r["seq"] == 3)
        assert http.get("/health").status_code == 200
        disk.fill()
        socket.send(wire.encode(snapshot(4, rng), 4, time.time()))
        reply = _replies_until(socket, lambda r: r["type"] == "error")
        assert reply["retry"] is True and reply["seq"] == 4 and reply["run_id"] == RUN
        health = http.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "failing" and body["failing_since"] <= time.time()
        assert any(w in body["reason"] for w in ("No space left", "File too large"))
        assert body["ingest"]["retry_later"] >= 1
        _assert_dashboard_shows(server.url, body["reason"])
        runs = http.get("/api/runs")
        assert runs.status_code in (200, 503), runs.text  # served, or the reason; never a 500
        if runs.status_code == 503:
            assert "cannot be written now" in runs.json()["detail"]
        disk.free()
        deadline = time.monotonic() + 30
        while (health := http.get("/health")).status_code != 200:
            assert time.monotonic() < deadline, health.json()
            time.sleep(0.2)
        assert health.json()["status"] == "ok" and "reason" not in health.json()
        socket.send(wire.encode(snapshot(4, rng), 4, time.time()))
        assert _replies_until(socket, lambda r: r["type"] == "ack" and r["seq"] == 4)
        assert http.get(f"/api/runs/{RUN}").json()["last_step"] == 4


def _replies_until(socket, wanted, timeout: float = 20.0) -> dict:
    """The first JSON reply for which ``wanted(reply)`` holds (fails after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
        if wanted(reply):
            return reply


def _assert_dashboard_shows(url: str, reason: str) -> None:
    """The dashboard reads the failure through its API client and puts it on the status line."""
    client = ApiClient(url)
    try:
        health = client.health()
    finally:
        client.close()
    assert health["status"] == "failing" and health["reason"] == reason
    status = StatusView()
    status.update(storage_failure=health["reason"])
    assert "cannot store new data" in status.pane.object
    assert html.escape(reason) in status.pane.object
    status.update(storage_failure=None)
    assert "cannot store" not in status.pane.object
