"""Run the server in this process until a signal, or until it has been idle long enough.

:func:`run_server` opens the store, binds the socket itself (so that port 0 yields a known
port), serves the app with uvicorn, and advertises itself in an info file next to the database
(``<db>.server.json``) once it is actually serving. Other processes find a running server with
:func:`~sentrycam.protocol.server_info.read_info_file`: DuckDB lets only one process open the file, so they must go through it.

Shutdown on SIGINT/SIGTERM or idleness is graceful: open connections are closed, queued
messages are written, the store is closed, and only then does the info file disappear.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from sentrycam.backend.app import Activity, create_app, open_store
from sentrycam.backend.settings import ServerSettings, server_url
from sentrycam.protocol.server_info import read_info_file

log = logging.getLogger(__name__)

#: Seconds uvicorn waits for open connections to finish after a shutdown starts.
GRACEFUL_SHUTDOWN_S = 10


class ServerStartError(RuntimeError):
    """The server could not start (address in use, database held elsewhere); the text says why."""


class _GracefulExit(Exception):
    """Raised by our signal handler once uvicorn has finished its own graceful shutdown."""


def run_server(settings: ServerSettings) -> None:
    """Serve until SIGINT/SIGTERM or ``idle_timeout_s`` without activity, then shut down cleanly.

    Raises :class:`ServerStartError` when another server holds the database, the database
    cannot be opened, or the address cannot be bound.
    """
    running = read_info_file(settings.db_path, info_file=settings.info_file)
    if running is not None:
        raise ServerStartError(f"a sentrycam server (pid {running['pid']}) already serves "
                               f"{settings.db_path} at {running.get('url')}; use it, or stop it "
                               f"with `sentrycam stop --db {settings.db_path}`")
    try:
        store = open_store(settings)
    except Exception as exc:  # the store's message names the file and the fix
        raise ServerStartError(f"cannot open the database {settings.db_path}: {exc}") from exc
    sock = None
    previous_handlers = _install_signal_handlers()
    try:
        sock = bind_socket(settings.host, settings.port)
        settings = on_bound_port(settings, sock)
        app = create_app(settings, store)
        server = uvicorn.Server(uvicorn_config(app, settings))
        asyncio.run(_serve(server, sock, settings, app.state.activity))
    except _GracefulExit:
        log.info("sentrycam server stopped by signal")
    finally:
        _restore_signal_handlers(previous_handlers)
        if sock is not None:
            sock.close()
        store.close()
        _remove_info_file(settings.info_file)


def uvicorn_config(app: Any, settings: ServerSettings, **overrides: Any) -> uvicorn.Config:
    """How sentrycam runs its app under uvicorn. A frame larger than ``max_frame_bytes`` makes
    the websocket layer close that connection with code 1009 (message too big), its reason
    naming the limit. The keepalive waits ``ws_ping_timeout_s`` for a pong: uvicorn reads
    nothing from a connection, pongs included, while its handler holds back under
    backpressure, so that wait must outlast a backpressure pause (see
    :data:`~sentrycam.protocol.chunks.KEEPALIVE_TIMEOUT_S`)."""
    options = {"lifespan": "on", "access_log": False, "ws_max_size": settings.max_frame_bytes,
               "ws_ping_interval": settings.ws_ping_interval_s,
               "ws_ping_timeout": settings.ws_ping_timeout_s,
               "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S, **overrides}
    return uvicorn.Config(app, **options)


def on_bound_port(settings: ServerSettings, sock: socket.socket) -> ServerSettings:
    """``settings`` with the port ``sock`` listens on (port 0 lets the OS pick one), so that
    ``settings.url`` is the server's own address: the one its dashboard sessions call."""
    return settings.model_copy(update={"port": sock.getsockname()[1]})


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port the OS picks)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ServerStartError(f"cannot resolve host {host!r}: {exc}") from None
    try:
        # Lets a restarted server rebind at once while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServerStartError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                               "choose another --port (0 picks a free one)") from None
    sock.set_inheritable(True)
    return sock


async def _serve(server: uvicorn.Server, sock: socket.socket, settings: ServerSettings,
                 activity: Activity) -> None:
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving  # startup failed: let its exception (or exit) through
            return
        await asyncio.sleep(0.02)
    port = sock.getsockname()[1]
    info = {"pid": os.getpid(), "url": server_url(settings.host, port), "host": settings.host,
            "port": port, "db": str(Path(settings.db_path).absolute()), "started_at": time.time(),
            "token_required": settings.token is not None}
    write_info_file(settings.info_file, info)
    log.info("sentrycam server serving %s at %s", info["db"], info["url"])
    watcher = (asyncio.create_task(_exit_when_idle(server, activity, settings.idle_timeout_s))
               if settings.idle_timeout_s > 0 else None)
    try:
        await serving
    finally:
        if watcher is not None:
            watcher.cancel()


async def _exit_when_idle(server: uvicorn.Server, activity: Activity, idle_timeout_s: float) -> None:
    poll_s = min(1.0, max(idle_timeout_s / 4, 0.05))
    while not server.should_exit:
        await asyncio.sleep(poll_s)
        if activity.idle_for() >= idle_timeout_s:
            log.info("no requests or connections for %.1f s: shutting down", idle_timeout_s)
            server.should_exit = True


def write_info_file(path: Path, info: dict[str, Any]) -> None:
    """Write ``info`` as JSON so that readers see either nothing or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(info, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_info_file(path: Path | None) -> None:
    """Remove the info file if it is this process's (never another server's)."""
    if path is None:
        return
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _raise_graceful_exit(signum: int, frame: Any) -> None:
    raise _GracefulExit(signal.Signals(signum).name)


def _install_signal_handlers() -> dict[int, Any]:
    """While uvicorn serves, it handles SIGINT/SIGTERM itself (graceful shutdown) and then
    re-raises the signal; these handlers turn that re-raise into a clean return."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _raise_graceful_exit) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
