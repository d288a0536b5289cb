"""The local projector yields to training that fills every core: while a run trains, a job waits
as long as less than about a core is free, and runs once the machine frees up, the training
stops or the job has waited the longest allowed; ``GET /api/projector`` says so. No timing is
asserted beyond "eventually"."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

import httpx
import pytest

from sentrycam.backend.feed import Change, ChangeFeed
from sentrycam.backend.projection import ProjectionWorker
from sentrycam.backend.projection_pacing import (DEFAULT_MAX_WAIT_S, MIN_FREE_CORES, CpuGate,
                                                 CpuMeter, cpu_measure_available)
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.testing import serve_in_thread
from sentrycam.protocol.changes import ChangeKind

from tests.backend.projection_feed import RUNS, WAIT_S, publish, start_runs
from tests.cpu_priority import busy_cores

needs_proc_stat = pytest.mark.skipif(not cpu_measure_available(), reason="Linux's /proc/stat")
#: Long enough for the meter to see a change on a loaded machine.
SEE_S = 60.0
#: Cores the busy loops take at the least, on a machine others load too (load 10 on 2 cores
#: leaves them about 0.4).
OWN_SHARE = 0.2


def _eventually(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := check()):
            return value
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def test_the_local_servers_priority_turns_the_gate_on_unless_told(tmp_path, monkeypatch):
    for name in ("SENTRYCAM_PROJECTOR_PRIORITY", "SENTRYCAM_PROJECTOR_YIELD",
                 "SENTRYCAM_PROJECTOR_YIELD_MAX_WAIT_S"):
        monkeypatch.delenv(name, raising=False)
    db = tmp_path / "x.duckdb"
    # A team server (normal priority) never holds a job; the one attach starts (lowest) does.
    assert ServerSettings(db_path=db).projector_yield_wait_s is None
    monkeypatch.setenv("SENTRYCAM_PROJECTOR_PRIORITY", "lowest")
    assert ServerSettings(db_path=db).projector_yield_wait_s == DEFAULT_MAX_WAIT_S
    monkeypatch.setenv("SENTRYCAM_PROJECTOR_YIELD_MAX_WAIT_S", "5")
    assert ServerSettings(db_path=db).projector_yield_wait_s == 5.0
    monkeypatch.setenv("SENTRYCAM_PROJECTOR_YIELD", "off")
    assert ServerSettings(db_path=db).projector_yield_wait_s is None
    assert ServerSettings(db_path=db, projector_priority="normal",
                          projector_yield=True).projector_yield_wait_s == 5.0


def test_a_worker_without_the_gate_says_it_does_not_wait(store):
    state = ProjectionWorker(store, ChangeFeed()).state()
    assert (state["yields_to_training"], state["waiting_for_cpu"]) == (False, False)
    assert state["free_cores"] is None and state["max_deferral_s"] is None


@needs_proc_stat
def test_the_meter_sees_every_core_busy_and_counts_its_own_tasks_free():
    with busy_cores() as loops:
        paths = [f"/proc/{loop.pid}/stat" for loop in loops]
        machine, own = CpuMeter(lambda: []), CpuMeter(lambda: paths)
        machine.start()
        own.start()
        try:
            _eventually(lambda: (f := machine.free_cores()) is not None and f < MIN_FREE_CORES,
                        SEE_S, "the meter saw the busy loops")
            # The same busy loops counted as the projector's own work read as free cores.
            def counted() -> bool:
                both = own.free_cores(), machine.free_cores()
                return None not in both and both[0] - both[1] >= OWN_SHARE

            _eventually(counted, SEE_S, "the meter counted its own tasks' CPU as free")
        finally:
            machine.stop()
            own.stop()


@needs_proc_stat
def test_the_gate_holds_a_job_while_a_run_trains_on_a_busy_machine_until_its_longest_wait():
    gate = CpuGate(CpuMeter(lambda: []), max_wait_s=3.0)
    with busy_cores():
        gate.start()
        try:
            _eventually(lambda: (f := gate.meter.free_cores()) is not None
                        and f < MIN_FREE_CORES, SEE_S, "the meter saw the busy loops")
            queued_at = time.monotonic()
            assert not gate.holds(queued_at)  # no run trains: nothing to yield to
            gate.saw_training("run")
            assert gate.holds(queued_at)
            _eventually(lambda: gate.saw_training("run") or not gate.holds(queued_at), SEE_S,
                        "the job went after 3 s")
            gate.note_activity()  # a job ran: the next one waits its turn again
            assert gate.holds(queued_at) and gate.held_for(queued_at) < 3.0
            gate.run_ended("run")  # the run is over: what is queued goes at once
            assert not gate.holds(queued_at)
        finally:
            gate.stop()


def _projector(url: str) -> dict:
    return httpx.get(f"{url}/api/projector", timeout=10).json()


@contextlib.contextmanager
def training(feed: ChangeFeed, run_id: str) -> Iterator[None]:
    """A run that trains, as the feed sees one: a status every second until the block exits,
    then its end."""
    done = threading.Event()

    def send() -> None:
        step = 0
        while not done.wait(1.0):
            step += 1
            feed.publish([Change(run_id, ChangeKind.STATUS, step, None)])

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        feed.publish([Change(run_id, ChangeKind.RUN_END, None, None)])


@pytest.mark.projector
@needs_proc_stat
def test_a_queued_snapshot_waits_while_every_core_is_busy_then_is_mapped(make_settings,
                                                                          store):
    settings = make_settings(projector=True, projector_engine="pool", projector_workers=1,
                             projector_threads=1, projector_priority="lowest",
                             projector_yield_max_wait_s=60.0, audit=False)
    labels = start_runs(store, RUNS[:1])
    with serve_in_thread(settings, store) as server:
        url = server.url
        _eventually(lambda: _projector(url)["state"] == "ready", WAIT_S, "the warm-up")
        assert _projector(url)["yields_to_training"] is True
        feed = server.app.state.feed
        with busy_cores(), training(feed, RUNS[0]):
            _eventually(lambda: (_projector(url)["free_cores"] or 9) < MIN_FREE_CORES, SEE_S,
                        "the server saw every core busy")
            publish(feed, RUNS[0], 0, labels)
            held = _eventually(lambda: (s := _projector(url))["waiting_for_cpu"] and s, SEE_S,
                               "the job was held for CPU")
            assert held["queue_depth"] >= 1 and held["projected"] == 0, held
            assert 0.0 <= held["deferred_s"] <= held["max_deferral_s"] == 60.0, held
        # Once the loops and the run stop (or at the latest after 60 s) both layers are mapped.
        done = _eventually(lambda: (s := _projector(url))["projected"] == 2 and s, WAIT_S,
                           "the held snapshot was mapped")
        assert done["waiting_for_cpu"] is False and done["errors"] == 0, done
