"""The server that ``attach`` starts runs beside the training it watches: at nice 19, its
projector worker in Linux's idle class with one compute thread per pool, waiting for a free
core before each job."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

from sentrycam.capture.launcher import (CORES_PER_LOCAL_WORKER, SERVER_NICE,
                                        THREAD_POOL_VARIABLES, ensure_local_server,
                                        local_server_environment, stop_local_server)
from sentrycam.protocol.server_info import read_info_file

from tests.cpu_priority import SCHED_IDLE, children, thread_priorities

WAIT_S = 120.0


def test_the_local_defaults_fill_in_only_what_the_user_did_not_set(monkeypatch):
    monkeypatch.setattr("sentrycam.capture.launcher.usable_cores",
                        lambda: 2 * CORES_PER_LOCAL_WORKER)
    env = local_server_environment({"PATH": "/bin"})
    assert env["PATH"] == "/bin" and env["SENTRYCAM_PROJECTOR_PRIORITY"] == "lowest"
    assert env["SENTRYCAM_PROJECTOR_WORKERS"] == "2"
    assert {env[name] for name in THREAD_POOL_VARIABLES} == {"1"}
    mine = local_server_environment({"SENTRYCAM_PROJECTOR_PRIORITY": "normal",
                                     "SENTRYCAM_PROJECTOR_THREADS": "3",
                                     "OMP_NUM_THREADS": "16"})
    assert mine["SENTRYCAM_PROJECTOR_PRIORITY"] == "normal"
    # The trainer's own thread settings are for the trainer: the server's follow its projector.
    assert {mine[name] for name in THREAD_POOL_VARIABLES} == {"3"}


def test_a_small_machine_gets_one_worker(monkeypatch):
    monkeypatch.setattr("sentrycam.capture.launcher.usable_cores", lambda: 2)
    assert local_server_environment({})["SENTRYCAM_PROJECTOR_WORKERS"] == "1"


def _spawned(server_pid: int) -> list[int]:
    """The server's multiprocessing children: its projector workers and its audit process."""
    return [pid for pid in children(server_pid)
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


@pytest.mark.projector  # its worker warms numba up
@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's idle class")
def test_the_local_servers_projector_worker_runs_in_the_idle_class(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTRYCAM_PROJECTOR", "on")  # the suite turns it off by default
    for name in ("SENTRYCAM_PROJECTOR_ENGINE", "SENTRYCAM_PROJECTOR_WORKERS",
                 "SENTRYCAM_PROJECTOR_PRIORITY", "SENTRYCAM_PROJECTOR_THREADS"):
        monkeypatch.delenv(name, raising=False)
    db = tmp_path / "runs" / "sentrycam.duckdb"
    url = ensure_local_server(db, timeout=120, idle_timeout_s=600)
    try:
        server = read_info_file(db)["pid"]
        with urllib.request.urlopen(url + "/api/projector", timeout=10) as response:
            state = json.load(response)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:  # the worker lowers itself as it starts
            priorities = {pid: thread_priorities(pid) for pid in _spawned(server)}
            workers = [pid for pid, threads in priorities.items()
                       if set(threads.values()) == {(19, SCHED_IDLE)}]
            others = [pid for pid in priorities if pid not in workers]
            if workers and others:
                break
            time.sleep(0.5)
        server_threads = thread_priorities(server)
    finally:
        stop_local_server(db)
    expected = int(local_server_environment({})["SENTRYCAM_PROJECTOR_WORKERS"])
    assert (state["engine"], state["workers"]) == ("pool", expected)
    assert state["cpu"] == {"threads": 1, "priority": "lowest"}
    # ... and its projector waits for a free core before each job (training may fill them all).
    assert state["yields_to_training"] is True and state["max_deferral_s"] > 0, state
    assert len(workers) == expected, priorities  # each in the idle class, every thread
    # The other child is the audit process: the server's nice 19, in the normal class (it must
    # keep up with ingest, like the server).
    assert len(others) == 1, priorities
    assert set(priorities[others[0]].values()) == {(SERVER_NICE, 0)}, priorities
    # The server itself stays in the normal class (ingest must keep up), at nice 19.
    assert {nice for nice, _ in server_threads.values()} == {SERVER_NICE}
