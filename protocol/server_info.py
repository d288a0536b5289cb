"""How a running server is found: the info file it writes next to its database.

DuckDB lets only one process open a database file, so every other process (a trainer's
launcher, the CLI's ``inspect``/``alerts``/``stop``) finds the server that holds it through
``<db_path>.server.json``, written by the server once it serves and removed when it stops:
``{"pid", "url", "host", "port", "db", "started_at", "token_required"}``. Standard library
only: the trainer and the CLI read it without loading the server's stack.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def info_file_path(db_path: str | os.PathLike[str]) -> Path:
    """Where the server holding ``db_path`` advertises itself: ``<db_path>.server.json``,
    absolute."""
    db = Path(db_path).expanduser().absolute()
    return db.with_name(db.name + ".server.json")


def read_info_file(db_path: str | os.PathLike[str] | None = None, *,
                   info_file: str | os.PathLike[str] | None = None,
                   live_only: bool = True) -> dict[str, Any] | None:
    """The info of the server holding ``db_path`` (or read from ``info_file``), or None when
    there is none, it is unreadable, or (with ``live_only``) its process has died."""
    path = Path(info_file) if info_file is not None else info_file_path(db_path or "")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    if live_only and not (isinstance(info.get("pid"), int) and pid_alive(info["pid"])):
        return None
    return info


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs; reaps it first if it is our own child that exited.
    A zombie (exited, not yet reaped by its parent, e.g. the server of a ``sentrycam demo``
    stopped from another terminal) counts as dead: the signal probe alone would call it alive."""
    if pid <= 0:
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: only the kill probe can tell
    try:
        os.kill(pid, 0)  # signal 0 checks existence without touching the process
    except ProcessLookupError:
        return False
    except PermissionError:
        return not _is_zombie(pid)  # exists, owned by someone else
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits for its parent to reap it (Linux ``/proc``; False
    where that cannot be read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The command name in parentheses may hold spaces: the state follows the last ")".
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])
