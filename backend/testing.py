"""Testing helpers (public): a real sentrycam server in this process, and a stand-in projector.

For your own tests and benchmarks, as sentrycam's use them::

    from sentrycam.backend.settings import ServerSettings
    from sentrycam.backend.testing import serve_in_thread

    with serve_in_thread(ServerSettings(db_path=tmp_path / "runs.duckdb")) as server:
        run = capture.attach(model, url=server.url, ...)

:func:`serve_in_thread` runs the real app (real DuckDB file, real uvicorn on a free loopback
port, real websockets) in a background thread. :class:`StandInProjector` writes a 2D map of
every stored snapshot at once, for servers started without the projector worker (whose numba
warm-up costs ~25 s); it is a stand-in for the worker's *timing*, not for its maps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import uvicorn

from sentrycam.backend.app import create_app
from sentrycam.backend.feed import Change
from sentrycam.backend.server import bind_socket, on_bound_port, uvicorn_config
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.store import Store
from sentrycam.protocol.changes import ChangeKind

log = logging.getLogger(__name__)

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
    settings = on_bound_port(settings, sock)
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


class StandInProjector:
    """Writes a 2D map of each newly stored snapshot, for every layer with features, and
    announces it on the change feed, as the projector worker does. The map is the snapshot's
    projection on the first two principal axes of that layer's first snapshot (fixed per
    run and layer, so points move only as their features move).

    With a projector worker present (``app.state.projection`` set), it does nothing, so a test
    can wait for the real maps either way. Use as a context manager around the server's use.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.active = getattr(app.state, "projection", None) is None
        self._axes: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._pending: list[Change] = []
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="stand-in-projector")
        self._subscription: Any = None

    def __enter__(self) -> StandInProjector:
        if self.active:
            self._subscription = self.app.state.feed.subscribe(self._on_changes,
                                                               name="stand-in-projector")
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.active:
            return
        self._subscription.close()
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(10)

    def _on_changes(self, changes: Any) -> None:
        snapshots = [c for c in changes if c.kind == ChangeKind.SNAPSHOT and c.message is not None]
        if snapshots:
            with self._wake:
                self._pending += snapshots
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                batch, self._pending = self._pending, []
            for change in batch:
                try:
                    self._project(change)
                except Exception:  # a stand-in must not kill the test's server thread
                    log.exception("stand-in projector failed on %s step %s", change.run_id,
                                  change.step)

    def _project(self, change: Change) -> None:
        """Map every layer of one snapshot: features float16 [N, D] -> coords float32 [N, 2]."""
        message = change.message
        ids = np.asarray(message.sample_ids, dtype=np.int64)
        store, feed = self.app.state.store, self.app.state.feed
        for layer, features in message.features.items():
            x = np.nan_to_num(np.asarray(features, dtype=np.float32))
            key = (change.run_id, layer)
            if key not in self._axes:
                mean = x.mean(axis=0)
                _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
                self._axes[key] = (mean, vt[:2].T)
            mean, axes = self._axes[key]
            coords = ((x - mean) @ axes).astype(np.float32)
            store.write_embedding(change.run_id, layer, change.step, ids, coords)
            feed.publish([Change(change.run_id, ChangeKind.EMBEDDING, change.step, layer)])
