"""A full disk under a live run: capture -> websocket -> `sentrycam serve` -> DuckDB on a real
full file system, then room again; the run completes with every message stored exactly once.

The database lives on a tmpfs of 8 MiB that a filler file fills (as root); where mounting is
not allowed, the server runs under a file-size limit (RLIMIT_FSIZE) instead, and "freeing
space" is restarting it without the limit.
"""

from __future__ import annotations

import functools
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sentrycam import capture
from sentrycam.backend.store import Store
from sentrycam.capture.sender import replay_spool
from sentrycam.capture.sequence import LOST_EVENT
from tests.full_disk import SmallDisk, limit_file_size

pytestmark = pytest.mark.slow

EVERY = 5
#: Probe samples per snapshot: small, so that freeing the filler makes room for the whole run.
PROBE_SIZE = 200
DISK_MIB = 8
#: Room left on the disk when the run starts: a few snapshots' worth.
ROOM_BYTES = 500_000
#: Under the fallback, no file of the server may grow past this.
FILE_LIMIT_BYTES = 1_000_000
FAILURE_TIMEOUT_S = 30.0
#: run.detach() gives up on a server that cannot store within its flush and close timeouts.
DETACH_BOUND_S = 60.0


def _get(url: str) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


class Disk:
    """Where the server's database lives, how the disk gets full, how it gets room again."""

    def __init__(self, tmp_path: Path, server_process) -> None:
        self.tmp_path, self.server_process = tmp_path, server_process
        self.small = None if SmallDisk.why_not() else SmallDisk(tmp_path / "disk", DISK_MIB)
        self.server = None

    def __enter__(self) -> Disk:
        folder = self.tmp_path / "disk"
        if self.small is not None:
            self.small.__enter__()
        else:
            folder.mkdir()
        limit = None if self.small else functools.partial(limit_file_size, FILE_LIMIT_BYTES)
        self.server = self.server_process(db=folder / "runs.duckdb", preexec_fn=limit,
                                          log_path=self.tmp_path / "server.log").start()
        if self.small is not None:
            self.small.fill(leave_bytes=ROOM_BYTES)
        return self

    def free(self) -> None:
        if self.small is not None:
            self.small.free()
            return
        self.server.stop()
        self.server = self.server_process(db=self.server.db, port=self.server.port,
                                          log_path=self.server.log).start()

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop()
        if self.small is not None:
            self.small.__exit__(*exc_info)


def _attach(trainer, url: str):
    return capture.attach(trainer.model, probe=(trainer.data.x_train, trainer.data.y_train),
                          criterion=trainer.criterion, optimizer=trainer.optimizer, url=url,
                          every=EVERY, overhead_budget=None, probe_size=PROBE_SIZE)


def _train_until_the_disk_is_full(trainer, url: str) -> dict:
    """Train until /health says 503 (the disk filled up); returns its body."""
    deadline = time.monotonic() + FAILURE_TIMEOUT_S
    while True:
        assert time.monotonic() < deadline, "the disk never filled up"
        trainer.train(EVERY)
        status, health = _get(f"{url}/health")
        if status == 503:
            assert health["status"] == "failing"
            assert any(w in health["reason"] for w in ("No space left", "File too large"))
            return health


def test_a_full_disk_mid_run_loses_and_duplicates_nothing_and_the_run_finishes(
        server_process, trainer, in_tmp_cwd, tmp_path):
    with Disk(tmp_path, server_process) as disk:
        url = disk.server.url
        run = _attach(trainer, url)
        _train_until_the_disk_is_full(trainer, url)
        trainer.train(4 * EVERY)  # still failing: the trainer spools, training goes on
        status, _ = _get(f"{url}/api/runs/{run.run_id}")
        assert status in (200, 503)  # what it can serve, or why not; never a 500
        assert run.counters().dropped == 0
        disk.free()
        url = disk.server.url
        trainer.train(4 * EVERY)
        run.detach()  # waits (bounded) for the server to acknowledge everything
        assert run.counters().dropped == 0
        status, health = _get(f"{url}/health")
        assert (status, health["status"]) == (200, "ok"), health
        summary = _get(f"{url}/api/runs/{run.run_id}")[1]
        assert summary["status"] == "finished", (summary, run.counters())
        disk.server.stop()
        _assert_stored_exactly_once(disk.server.db, run.run_id, trainer.steps_done)


def test_a_run_that_ends_while_the_disk_is_full_waits_in_the_spool_and_sync_completes_it(
        server_process, trainer, in_tmp_cwd, tmp_path):
    with Disk(tmp_path, server_process) as disk:
        run = _attach(trainer, disk.server.url)
        _train_until_the_disk_is_full(trainer, disk.server.url)
        trainer.train(2 * EVERY)
        started = time.monotonic()
        run.detach()  # the server still cannot store: bounded wait, the rest stays spooled
        assert time.monotonic() - started < DETACH_BOUND_S
        spool = in_tmp_cwd / "sentrycam-runs" / "spool"
        assert list(spool.rglob("*.seg")), "the unacknowledged messages should be spooled"
        assert run.counters().dropped == 0
        disk.free()
        assert replay_spool(spool, disk.server.url, timeout=60) > 0
        assert not list(spool.rglob("*.seg"))
        disk.server.stop()
        _assert_stored_exactly_once(disk.server.db, run.run_id, trainer.steps_done)


def _assert_stored_exactly_once(db: Path, run_id: str, steps: int) -> None:
    """Every step's loss once, every snapshot once per layer, no stand-in for a lost message,
    and the run finished at its last step."""
    with Store(db, read_only=True) as store:
        assert store.scalars(run_id, names=["loss"])["step"] == list(range(steps))
        index = store.snapshot_index(run_id)
        layers = {row["layer"] for row in index}
        assert layers
        expected = {(step, layer) for step in range(0, steps, EVERY) for layer in layers}
        assert sorted((row["step"], row["layer"]) for row in index) == sorted(expected)
        assert not [e for e in store.events(run_id) if e["event"] == LOST_EVENT]
        summary = store.run_summaries(run_id)[0]
        assert (summary["status"], summary["last_step"]) == ("finished", steps - 1)
