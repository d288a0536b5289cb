"""``sentrycam compact``: apply the retention policy to a store file and shrink the file.

A running server holds its file (DuckDB lets one process write it), applies the same policy to
each run as its snapshots arrive, and cannot rewrite the file under its own readers; so
``compact`` works on a file no server holds and refuses, naming the way, while one does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentrycam.backend.cli_data import _bytes, _open_store, _server_for
from sentrycam.backend.cli_errors import CLIError
from sentrycam.backend.cli_runs import resolve_run


def retention_policy(keep_newest: int | None, history: int | None, db: Path) -> Any:
    """The policy the server would apply (``SENTRYCAM_RETENTION_*`` or the defaults), with
    the flags given in place of its settings."""
    from pydantic import ValidationError

    from sentrycam.backend.settings import ServerSettings

    given = {"retention_max_snapshots": keep_newest, "retention_history": history}
    try:
        return ServerSettings(db_path=db, **{name: value for name, value in given.items()
                                             if value is not None}).retention
    except ValidationError as exc:
        raise CLIError("; ".join(e["msg"].removeprefix("Value error, ")
                                 for e in exc.errors())) from None


def compact(*, db: Path, run: str | None, keep_newest: int | None,
            history: int | None) -> str:
    """Compact the file ``db`` (every run, or the one ``run`` names); returns what was done,
    in words."""
    from sentrycam.backend.store import StoreLockedError
    from sentrycam.backend.store.compact import compact_file

    server = _server_for(db)
    if server is not None:
        raise CLIError(
            f"a server ({server}) holds {db}; it applies the retention policy to each run "
            "itself as snapshots arrive. To shrink the file, stop it (`sentrycam stop --db "
            f"{db}`), run `sentrycam compact --db {db}`, then start it again; meanwhile "
            f"`sentrycam inspect --url {server}` shows its sizes")
    policy = retention_policy(keep_newest, history, db)
    if policy.keeps_everything:
        raise CLIError("the retention policy keeps every snapshot's feature vectors "
                       "(--keep-newest 0 or SENTRYCAM_RETENTION_MAX_SNAPSHOTS=0): nothing to "
                       "compact; give --keep-newest N")
    run_id = None
    if run is not None:
        store = _open_store(db)
        try:
            run_id = resolve_run(run, store.run_summaries())["run_id"]
        finally:
            store.close()
    try:
        done = compact_file(db, policy, run_id)
    except StoreLockedError as exc:
        raise CLIError(str(exc)) from None
    which = f"run {run_id}" if run_id else "every run"
    return (f"compacted {db} ({which}; kept {policy.describe()}): {done.snapshots_dropped} "
            f"snapshots (step, layer) lost their feature vectors; the file went from "
            f"{_bytes(done.bytes_before)} to {_bytes(done.bytes_after)} "
            f"({done.bytes_before} -> {done.bytes_after} bytes)")
