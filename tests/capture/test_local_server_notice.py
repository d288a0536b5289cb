"""A server that ``attach`` starts says, when it starts, that it outlives the trainer and when
it stops itself (a notebook user would otherwise not know it keeps running)."""

from __future__ import annotations

import logging

import pytest

from sentrycam.capture.launcher import ensure_local_server, stop_local_server

pytestmark = pytest.mark.slow


def test_a_started_server_announces_its_idle_timeout_once(tmp_path, caplog):
    db = tmp_path / "runs" / "sentrycam.duckdb"
    caplog.set_level(logging.INFO, logger="sentrycam")
    try:
        ensure_local_server(db, idle_timeout_s=600)
        notices = [r.getMessage() for r in caplog.records if "started a local server" in
                   r.getMessage()]
        assert notices == [
            f"sentrycam: started a local server for {db} (log: {db.parent / 'server.log'}); "
            "it stops itself after 10 idle minutes (no trainer, dashboard or request), or "
            f"stop it now with `sentrycam stop --db {db}`"]
        caplog.clear()
        ensure_local_server(db, idle_timeout_s=600)  # reused: nothing new to say
        assert not [r for r in caplog.records if "started a local server" in r.getMessage()]
        log = (db.parent / "server.log").read_text()
        assert "this server stops itself after 10 idle minutes" in log
    finally:
        stop_local_server(db, timeout=20)
