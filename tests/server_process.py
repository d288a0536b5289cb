"""Real ``python -m sentrycam serve`` child processes on loopback, for the tests that need a
server in its own process (capture's sender and launcher, end-to-end tests). Registered as a
pytest plugin by the root conftest: the ``server_process`` fixture serves every folder.

Starting one costs seconds (a fresh interpreter imports the web stack, DuckDB and torch), so
tests that use it belong to the slow tier (``@pytest.mark.slow``).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    """Whether the server at ``url`` answers /health with status ok."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return json.load(response)["status"] == "ok"
    except OSError:
        return False


@dataclass
class ServerProcess:
    """A ``python -m sentrycam serve`` child process on a fixed port; its output goes to
    ``log_path`` (default: the database path with suffix ``.log``). ``preexec_fn`` runs in the
    child before the server starts (a resource limit, say)."""

    db: Path
    port: int
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    preexec_fn: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.log_path or self.db.with_suffix(".log")

    def start(self, timeout: float = START_TIMEOUT_S) -> "ServerProcess":
        """Start the server and return once it is healthy (fail with its log if it exits)."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sentrycam", "serve", "--db", str(self.db),
                 "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + timeout
        while not healthy(self.url):
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            assert time.monotonic() < deadline, f"server did not become healthy in {timeout} s"
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, whatever was in flight is lost by the server."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL if it does not end in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture
def server_process(tmp_path) -> Iterator[Callable[..., ServerProcess]]:
    """``server_process(db=None, port=None, **options)``: a ServerProcess (not started yet) for
    ``db`` (default tmp_path/e2e.duckdb) on ``port`` (default a free one), with ``options``
    (``log_path``, ``preexec_fn``); all stopped at the end."""
    made: list[ServerProcess] = []

    def make(db: Path | None = None, port: int | None = None, **options) -> ServerProcess:
        made.append(ServerProcess(db or tmp_path / "e2e.duckdb", port or free_port(),
                                  **options))
        return made[-1]

    yield make
    for server in made:
        server.stop()
