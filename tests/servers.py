"""A real sentrycam server on a free loopback port, in a background thread, for tests.

    from tests.servers import serve_in_thread
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

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


def isolate_environment(monkeypatch: Any) -> None:
    """Settings come only from the test (``monkeypatch``: pytest's fixture): no SENTRYCAM_*
    variable of the caller's shell leaks in, and servers run without the projector worker
    (~25 s of numba warm-up) unless a test asks."""
    for name in [n for n in os.environ if n.startswith("SENTRYCAM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SENTRYCAM_PROJECTOR", "off")
