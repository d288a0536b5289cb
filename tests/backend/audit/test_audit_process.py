"""The audit engine in its own process (the default): alerts are stored by the server and
announced on its feed as with the in-process engine, the child never opens the database, and a
child that dies is started again, counted, and audits what comes next."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from sentrycam.backend.testing import serve_in_thread
from tests.backend.audit.trainer import settle, train_streamed

pytestmark = pytest.mark.slow


def test_alerts_come_from_the_audit_process_and_reach_store_feed_and_rest(make_settings):
    announced = []
    with serve_in_thread(make_settings()) as server:
        engine = server.app.state.audit
        server.app.state.feed.subscribe(
            lambda changes: announced.extend(c for c in changes if c.kind == "alert"),
            name="test")
        run_id = train_streamed(server.url, steps=220, spike_at=150)
        settle(server)
        stats = engine.stats()
        assert stats["kind"] == "process" and stats["pid"] not in (None, os.getpid())
        assert stats["changes"] > 0 and stats["errors"] == stats["dropped"] == 0
        alerts = server.store.alerts(run_id, min_severity=2)
        assert alerts, "an LR spike of 30x went unnoticed"
        assert 150 <= min(a["evidence"]["confirmed_step"] for a in alerts) <= 160
        assert {c.message["alert_id"] for c in announced} >= {a["alert_id"] for a in alerts}
        status = httpx.get(f"{server.url}/api/runs/{run_id}/audit").json()
        assert status["last_step"] >= 200 and "loss_divergence" in status["active"]
        assert status["engine"]["kind"] == "process"
        child = engine.pid()
    assert not _running(child), "the audit process outlived its server"


def test_a_killed_audit_process_is_restarted_counted_and_audits_on(make_settings):
    with serve_in_thread(make_settings()) as server:
        engine = server.app.state.audit
        train_streamed(server.url, steps=60)
        settle(server)
        first = engine.pid()
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while engine.stats()["restarts"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert engine.stats()["restarts"] == 1
        run_id = train_streamed(server.url, steps=220, spike_at=150, seed=1)
        settle(server)
        assert engine.pid() != first and engine.alive()
        assert server.store.alerts(run_id, min_severity=2), "the new process audits new runs"
        status = engine.run_status(run_id)
        assert status is not None and status["last_step"] >= 200


def test_the_thread_engine_stays_available(make_settings):
    with serve_in_thread(make_settings(audit_engine="thread")) as server:
        run_id = train_streamed(server.url, steps=220, spike_at=150)
        settle(server)
        assert server.app.state.audit.stats()["kind"] == "thread"
        assert server.store.alerts(run_id, min_severity=2)


def _running(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = open(f"/proc/{pid}/status").read()  # a zombie is not running
    return "\tZ" not in status.split("State:")[1].splitlines()[0]


def test_a_change_that_cannot_reach_the_process_is_counted_and_the_audit_goes_on(make_settings):
    from sentrycam.backend.feed import Change

    with serve_in_thread(make_settings()) as server:
        engine = server.app.state.audit
        server.app.state.feed.publish([Change("odd-run", "scalars", 0, None, lambda: None)])
        assert engine.wait_idle(60)
        assert engine.stats()["unaudited"] == 1 and engine.stats()["restarts"] == 1
        run_id = train_streamed(server.url, steps=220, spike_at=150)
        settle(server)
        assert server.store.alerts(run_id, min_severity=2) and engine.alive()
