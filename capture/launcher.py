"""Start, find and stop the local sentrycam server that ``attach`` uses by default.

The server is a separate process (``python -m sentrycam serve``), detached from the trainer so
that it outlives it (the dashboard stays up after training) and stops itself after an idle
timeout. Once it serves, it writes ``<db_path>.server.json`` (pid, url, db, ...) and removes it
on exit; that file is how later trainers and :func:`stop_local_server` find it.

The server runs beside the training it watches, so it must not slow it: it runs at nice 19,
and its projector (the costly part) in one worker process per 8 cores (at least one) with one
compute thread each, in Linux's idle class (see :func:`local_server_environment`). On a busy
small machine maps arrive later; the training keeps its speed.

Only the standard library is used here: the trainer process must stay light.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock, races are possible
    fcntl = None  # type: ignore[assignment]

from sentrycam.capture.console import announce
from sentrycam.protocol.server_info import info_file_path, pid_alive, read_info_file

logger = logging.getLogger(__name__)

LOG_NAME = "server.log"
_LOG_TAIL_BYTES = 4000
_POLL_S = 0.1
#: The embedded server's nice value: the lowest priority Unix gives (the trainer stays at 0).
SERVER_NICE = 19
#: Cores per projector worker of the embedded server (at least one worker, at most four).
CORES_PER_LOCAL_WORKER = 8
#: Environment variables that size a process's thread pools when its libraries load.
THREAD_POOL_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                         "NUMBA_NUM_THREADS")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def local_server_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an embedded server: ``environ`` (default ``os.environ``) with the
    projector's defaults for a machine it shares with training, where ``environ`` sets none:
    priority "lowest", one worker per :data:`CORES_PER_LOCAL_WORKER` cores (1 to 4), one
    compute thread each; and that thread count in :data:`THREAD_POOL_VARIABLES`, so that no
    library of the server or its workers starts a thread per core."""
    environ = dict(os.environ if environ is None else environ)
    workers = max(1, min(4, usable_cores() // CORES_PER_LOCAL_WORKER))
    defaults = {"SENTRYCAM_PROJECTOR_PRIORITY": "lowest",
                "SENTRYCAM_PROJECTOR_WORKERS": str(workers),
                "SENTRYCAM_PROJECTOR_THREADS": "1"}
    merged = {**defaults, **environ}
    threads = merged["SENTRYCAM_PROJECTOR_THREADS"]
    return {**merged, **{name: threads for name in THREAD_POOL_VARIABLES}}


def idle_timeout_text(idle_timeout_s: float) -> str:
    """How a server with this idle timeout ends: ``"stops itself after 30 idle minutes (no
    trainer, dashboard or request)"``; ``"runs until stopped"`` for 0."""
    if idle_timeout_s <= 0:
        return "runs until stopped"
    amount = (f"{idle_timeout_s / 60:g} idle minutes" if idle_timeout_s >= 60
              else f"{idle_timeout_s:g} idle seconds")
    return f"stops itself after {amount} (no trainer, dashboard or request)"


def default_db_path() -> Path:
    """Where the embedded default keeps its database: ``./sentrycam-runs/sentrycam.duckdb``."""
    return Path.cwd() / "sentrycam-runs" / "sentrycam.duckdb"


def server_health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """GET ``<url>/health``; the JSON answer, or None if the server does not answer ok."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as response:
            data = json.loads(response.read())
    except (OSError, ValueError):  # URLError, HTTPError, timeouts and bad JSON
        return None
    return data if isinstance(data, dict) and data.get("status") == "ok" else None


def _same_file(a: str | os.PathLike[str] | None, b: Path) -> bool:
    return a is not None and Path(a).resolve() == b.resolve()


def running_server_url(db_path: str | os.PathLike[str]) -> str | None:
    """The url of a live, healthy server for ``db_path`` (found through its info file), else
    None."""
    db_path = Path(db_path).expanduser().absolute()
    info = read_info_file(db_path, live_only=False)
    if not info or not isinstance(info.get("url"), str):
        return None
    health = server_health(info["url"])
    if health is not None and _same_file(health.get("db"), db_path):
        return info["url"]
    return None


def ensure_local_server(db_path: str | os.PathLike[str], *, timeout: float = 60.0,
                        idle_timeout_s: float = 1800.0) -> str:
    """The url of a local server for ``db_path``: an already running one, else a new one.

    A new server listens on a free loopback port, logs to ``<db folder>/server.log`` and stops
    itself after ``idle_timeout_s`` s without clients. Two processes calling this at once for
    the same file get the same server (a lock file serialises check-and-start).

    Raises ``RuntimeError`` (with the tail of the server log) if the server exits early or does
    not become healthy within ``timeout`` s.
    """
    db_path = Path(db_path).expanduser().absolute()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with _LaunchLock(db_path, deadline):
        url = running_server_url(db_path)
        if url is not None:
            logger.info("reusing the sentrycam server at %s for %s", url, db_path)
            return url
        return _start_server(db_path, deadline, idle_timeout_s)


class _LaunchLock:
    """Holds ``<db_path>.launch.lock`` (flock) until ``deadline``; RuntimeError if it cannot."""

    def __init__(self, db_path: Path, deadline: float) -> None:
        self._path = Path(f"{db_path}.launch.lock")
        self._deadline = deadline
        self._file = None

    def __enter__(self) -> None:
        self._file = open(self._path, "a")
        if fcntl is None:
            return
        while True:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= self._deadline:
                    self._file.close()
                    raise RuntimeError(f"another process holds {self._path} (starting a server for "
                                       "the same database) and did not finish in time") from None
                time.sleep(_POLL_S)

    def __exit__(self, *exc: object) -> None:
        self._file.close()  # releases the flock


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log_path: Path, start: int) -> str:
    """The last few KB the server wrote to its log since offset ``start``."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(start, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            return f.read().decode("utf-8", "replace").strip() or "(the log is empty)"
    except OSError as exc:
        return f"(cannot read {log_path}: {exc})"


def _start_server(db_path: Path, deadline: float, idle_timeout_s: float) -> str:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = db_path.parent / LOG_NAME
    command = [sys.executable, "-m", "sentrycam", "serve", "--db", str(db_path),
               "--host", "127.0.0.1", "--port", str(port), "--idle-timeout", str(idle_timeout_s)]
    with open(log_path, "ab") as log:
        start = log.tell()
        # A new session: Ctrl-C in the trainer's terminal must not take the dashboard down.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env=local_server_environment())
    _lower_priority(process.pid)
    logger.info("starting a sentrycam server (pid %d) at %s for %s", process.pid, url, db_path)
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise RuntimeError(f"the sentrycam server for {db_path} exited with code {code} "
                               f"before serving. The end of {log_path}:\n"
                               f"{_log_tail(log_path, start)}")
        # The info file can lag the first healthy answer; a trainer racing in right after we
        # release the launch lock must find it, or it would start a second server.
        info = read_info_file(db_path, live_only=False)
        if info and info.get("url") == url and _same_file(info.get("db"), db_path):
            health = server_health(url, timeout=1.0)
            if health is not None and _same_file(health.get("db"), db_path):
                announce(f"sentrycam: started a local server for {db_path} (log: {log_path}); "
                         f"it {idle_timeout_text(idle_timeout_s)}, or stop it now with "
                         f"`sentrycam stop --db {db_path}`")
                return url
        time.sleep(_POLL_S)
    _terminate(process)
    raise RuntimeError(f"the sentrycam server for {db_path} did not become healthy at {url} in "
                       f"time. The end of {log_path}:\n{_log_tail(log_path, start)}")


def _lower_priority(pid: int) -> None:
    """Run the embedded server at nice :data:`SERVER_NICE`: on a machine with few cores its
    ingest and dashboard work must yield to the training it watches. It is not put in the idle
    class (its projector workers are): ingest must keep up with the trainer. Called while the
    new process has one thread (Linux's nice is per thread); the threads it starts inherit it.
    On Windows the server runs at normal priority."""
    if not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, SERVER_NICE)
    except OSError as exc:  # not permitted here: the server still works at normal priority
        logger.debug("could not lower the embedded server's priority: %s", exc)


def _terminate(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(5.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5.0)


def _is_sentrycam_server(pid: int, info: dict[str, Any], db_path: Path) -> bool:
    """Guard against signalling an unrelated process that reused a dead server's pid."""
    health = server_health(str(info.get("url", "")), timeout=2.0)
    if health is not None:
        return health.get("pid") == pid and _same_file(health.get("db"), db_path)
    try:  # a hung server does not answer: fall back to its command line (Linux)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"sentrycam" in cmdline and b"serve" in cmdline


def stop_local_server(db_path: str | os.PathLike[str], timeout: float = 20.0) -> bool:
    """Stop the server serving ``db_path`` (SIGTERM, then SIGKILL after ``timeout`` s).

    Returns True if a server was stopped, False if none was running. A stale info file left by
    a server that died is removed.
    """
    db_path = Path(db_path).expanduser().absolute()
    info_path = info_file_path(db_path)
    info = read_info_file(db_path, live_only=False)
    pid = info.get("pid") if info else None
    running = isinstance(pid, int) and pid_alive(pid)
    if not running or not _is_sentrycam_server(pid, info, db_path):
        if info_path.exists():
            logger.info("removing the stale server info file %s", info_path)
            info_path.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    if not _wait_until(lambda: not pid_alive(pid) and not info_path.exists(), timeout):
        if pid_alive(pid):
            logger.warning("sentrycam server pid %d did not stop within %.0f s; killing it",
                           pid, timeout)
            os.kill(pid, signal.SIGKILL)
            _wait_until(lambda: not pid_alive(pid), 5.0)
        info_path.unlink(missing_ok=True)
    return True


def _wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True
