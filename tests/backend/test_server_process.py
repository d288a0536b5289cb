"""run_server in its own process: info file, SIGTERM, idle exit; settings validation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from websockets.sync.client import connect

from sentrycam.backend.server import ServerStartError, bind_socket, run_server
from sentrycam.backend.settings import ServerSettings
from sentrycam.protocol.server_info import info_file_path, read_info_file
from sentrycam.backend.store import Store
from sentrycam.protocol import wire
from sentrycam.protocol.messages import RunStart, Scalars

START_TIMEOUT_S = 60.0
SERVE = ("import sys\n"
         "from sentrycam.backend.server import run_server\n"
         "from sentrycam.backend.settings import ServerSettings\n"
         "run_server(ServerSettings(db_path=sys.argv[1], port=0, idle_timeout_s=float(sys.argv[2])))\n")


class ServerProcess:
    def __init__(self, db: Path, idle_timeout_s: float = 0.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRYCAM_")}
        self.log = db.with_suffix(".log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", SERVE, str(db), str(idle_timeout_s)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        self.db = db

    def wait_info(self) -> dict:
        deadline = time.monotonic() + START_TIMEOUT_S
        while (info := read_info_file(self.db)) is None:
            assert self.proc.poll() is None, f"server exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"no info file:\n{self.output()}"
            time.sleep(0.05)
        return info

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def spawn(tmp_path):
    started: list[ServerProcess] = []

    def make(idle_timeout_s: float = 0.0) -> ServerProcess:
        started.append(ServerProcess(tmp_path / "runs.duckdb", idle_timeout_s))
        return started[-1]
    yield make
    for process in started:
        process.stop()


@pytest.mark.slow  # starts a server process
def test_serves_advertises_and_shuts_down_cleanly_on_sigterm(spawn, tmp_path):
    process = spawn()
    info = process.wait_info()
    assert info["pid"] == process.proc.pid
    assert info["db"] == str((tmp_path / "runs.duckdb").absolute())
    assert info["url"] == f"http://127.0.0.1:{info['port']}" and info["token_required"] is False
    assert httpx.get(info["url"] + "/health", timeout=10).json()["db"] == info["db"]

    with connect(f"ws://127.0.0.1:{info['port']}/ws/ingest") as ws:
        ws.send(wire.encode(RunStart("proc-run", "in a process", 1.0), 0, 1.0))
        ws.send(wire.encode(Scalars("proc-run", 0, 1.0, {"loss": 0.7}), 1, 1.0))
        acked = 0
        while acked < 1:
            acked = json.loads(ws.recv(timeout=10)).get("seq", -1)

    with pytest.raises(ServerStartError, match="already serves"):
        run_server(ServerSettings(db_path=tmp_path / "runs.duckdb", port=0))

    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(30) == 0, process.output()
    assert not info_file_path(tmp_path / "runs.duckdb").exists()
    with Store(tmp_path / "runs.duckdb", read_only=True) as store:  # the lock was released
        assert store.scalars("proc-run")["value"] == [pytest.approx(0.7)]


@pytest.mark.slow  # starts a server process
def test_exits_by_itself_after_the_idle_timeout(spawn, tmp_path):
    process = spawn(idle_timeout_s=1.0)
    process.wait_info()
    assert process.proc.wait(30) == 0, process.output()
    assert not info_file_path(tmp_path / "runs.duckdb").exists()


def test_read_info_file_ignores_missing_garbage_and_dead_servers(tmp_path):
    db = tmp_path / "x.duckdb"
    assert read_info_file(db) is None
    info_file_path(db).write_text("{not json")
    assert read_info_file(db) is None
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    info_file_path(db).write_text(json.dumps({"pid": dead_pid, "url": "http://127.0.0.1:1"}))
    assert read_info_file(db) is None
    info_file_path(db).write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:1"}))
    assert read_info_file(db)["url"] == "http://127.0.0.1:1"


def test_a_port_in_use_is_a_clear_error():
    taken = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(ServerStartError, match="choose another --port"):
            bind_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


# ---- settings -----------------------------------------------------------------------------------

def test_a_public_address_needs_a_token(tmp_path):
    with pytest.raises(ValidationError, match="set SENTRYCAM_TOKEN or --token-file"):
        ServerSettings(db_path=tmp_path / "a.duckdb", host="0.0.0.0")
    assert ServerSettings(db_path=tmp_path / "a.duckdb", host="0.0.0.0", token="t").token == "t"
    for loopback in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert ServerSettings(db_path=tmp_path / "a.duckdb", host=loopback).token is None


def test_settings_read_the_environment_and_fill_the_info_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTRYCAM_TOKEN", "from-env")
    monkeypatch.setenv("SENTRYCAM_PORT", "0")
    monkeypatch.setenv("SENTRYCAM_IDLE_TIMEOUT_S", "2.5")
    settings = ServerSettings(db_path=tmp_path / "a.duckdb")
    assert (settings.token, settings.port, settings.idle_timeout_s) == ("from-env", 0, 2.5)
    assert settings.info_file == (tmp_path / "a.duckdb.server.json").absolute()
    with pytest.raises(ValidationError, match="port"):
        ServerSettings(db_path=tmp_path / "a.duckdb", port=70000)
