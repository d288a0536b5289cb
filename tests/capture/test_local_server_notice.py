"""A server that ``attach`` starts says, when it starts, that it outlives the trainer and when
it stops itself (a notebook user would otherwise not know it keeps running)."""

from __future__ import annotations

import logging
import subprocess
import sys

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


_SCRIPT = """
import sys, torch
from torch import nn
from sentrycam import capture
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
x, y = torch.zeros(16, 4), torch.arange(16) % 2
run = capture.attach(model, probe=(x, y), db=sys.argv[1])
run.detach()
"""


def test_a_plain_script_shows_the_notice_on_stderr(tmp_path):
    """No logging configured (a plain script, a notebook): the lines still reach the user."""
    db = tmp_path / "plain" / "runs.duckdb"
    try:
        done = subprocess.run([sys.executable, "-c", _SCRIPT, str(db)], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = done.stderr.splitlines()
        assert any(line.startswith(f"sentrycam: started a local server for {db}")
                   and "stops itself after 30 idle minutes" in line for line in lines)
        assert any(line.startswith("sentrycam: dashboard at http://127.0.0.1:") for line in lines)
    finally:
        stop_local_server(db, timeout=20)
