"""A real sentrycam server on a free loopback port, in a background thread.

``serve_in_thread`` is a plain context manager so other test folders can reuse it::

    from tests.backend.conftest import serve_in_thread   # with the repo root on sys.path

Fixtures here: ``store`` (a real DuckDB file in tmp_path), ``server`` (the app serving that
store), and ``make_settings`` (ServerSettings for tmp_path with overrides).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import uvicorn

from sentrycam.backend.app import create_app
from sentrycam.backend.server import bind_socket, uvicorn_config
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.store import Store

STARTUP_TIMEOUT_S = 30.0


@dataclass
class RunningServer:
    """A server started by :func:`serve_in_thread`. ``url`` is http://127.0.0.1:PORT."""

    app: Any
    server: uvicorn.Server
    thread: threading.Thread
    settings: ServerSettings
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/ingest"

    @property
    def store(self) -> Store:
        return self.app.state.store

    def wait_written(self, timeout: float = 10.0) -> None:
        """Wait until everything the server received so far is in the store (or failed)."""
        assert self.app.state.writer.wait_idle(timeout), "ingest writer did not go idle in time"


@contextlib.contextmanager
def serve_in_thread(settings: ServerSettings, store: Store | None = None) -> Iterator[RunningServer]:
    """Serve ``create_app(settings, store)`` with uvicorn on 127.0.0.1 (a free port) until the
    block exits; then shut down gracefully (the writer drains) and join the thread."""
    sock = bind_socket("127.0.0.1", 0)
    app = create_app(settings, store)
    server = uvicorn.Server(uvicorn_config(app, settings, log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="sentrycam-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the test server did not start; see the captured log")
        time.sleep(0.01)
    try:
        yield RunningServer(app, server, thread, settings, sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT_S)
        sock.close()
        assert not thread.is_alive(), "the test server did not stop"


@pytest.fixture(autouse=True)
def _no_sentrycam_environment(monkeypatch):
    """Settings come only from the test: a SENTRYCAM_TOKEN in the caller's shell must not leak in."""
    for name in [n for n in os.environ if n.startswith("SENTRYCAM_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def make_settings(tmp_path: Path):
    def make(**overrides: Any) -> ServerSettings:
        return ServerSettings(**{"db_path": tmp_path / "runs.duckdb", "port": 0, **overrides})
    return make


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "runs.duckdb") as opened:
        yield opened


@pytest.fixture
def server(make_settings, store) -> Iterator[RunningServer]:
    with serve_in_thread(make_settings(), store) as running:
        yield running
