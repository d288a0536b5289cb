"""Read-side commands: ``inspect`` and ``export``, against a database file or a running server.

A DuckDB file held by a running server cannot be opened by another process, so when the file's
server info file names a live server these commands go through its API instead.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from sentrycam.backend.cli_errors import CLIError

SUMMARY_COLUMNS = ("run_id", "name", "status", "last_step", "n_scalar_rows", "n_snapshots",
                   "n_probe", "n_embeddings", "n_alerts", "dropped", "capture_overhead")


def _server_for(db: Path) -> str | None:
    from sentrycam.protocol.server_info import read_info_file

    info = read_info_file(db)
    return info["url"] if info else None


def _get_json(url: str, path: str, token: str | None) -> Any:
    token = token or os.environ.get("SENTRYCAM_TOKEN")
    request = urllib.request.Request(url.rstrip("/") + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise CLIError(f"{url}{path} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CLIError(f"cannot reach a sentrycam server at {url}: {exc}; "
                       "start one with `sentrycam serve --db FILE`") from None


def _open_store(db: Path):
    from sentrycam.backend.store import Store

    if not db.exists():
        raise CLIError(f"no database file at {db}")
    try:
        return Store(db, read_only=True)
    except Exception as exc:  # the store's own message names the file and the fix
        raise CLIError(str(exc)) from None


def inspect_runs(*, db: Path | None, url: str | None, run_id: str | None,
                 token: str | None = None) -> list[dict[str, Any]]:
    """One summary dict per run (see ``Store.run_summaries``), newest first."""
    url = url or (_server_for(db) if db is not None else None)
    if url is not None:
        if run_id:
            return [_get_json(url, f"/api/runs/{urllib.parse.quote(run_id)}", token)]
        return _get_json(url, "/api/runs", token)
    from sentrycam.backend.store import UnknownRunError

    store = _open_store(db)
    try:
        return store.run_summaries(run_id)
    except UnknownRunError as exc:
        raise CLIError(str(exc)) from None
    finally:
        store.close()


def export_run(*, db: Path, run_id: str, out: Path) -> list[Path]:
    """Write the run's tables as Parquet files under ``out``; returns their paths."""
    server = _server_for(db)
    if server is not None:
        raise CLIError(f"a server ({server}) holds this database; stop it with "
                       f"`sentrycam stop --db {db}` or export after it has exited")
    from sentrycam.backend.store import UnknownRunError

    store = _open_store(db)
    try:
        return store.export_run(run_id, out)
    except UnknownRunError as exc:
        raise CLIError(str(exc)) from None
    finally:
        store.close()


def render_table(runs: list[dict[str, Any]]) -> str:
    """A plain-text table of run summaries for humans."""
    if not runs:
        return "no runs"
    rows = [[_cell(run.get(col)) for col in SUMMARY_COLUMNS] for run in runs]
    widths = [max(len(col), *(len(row[i]) for row in rows)) for i, col in enumerate(SUMMARY_COLUMNS)]
    lines = ["  ".join(col.ljust(w) for col, w in zip(SUMMARY_COLUMNS, widths))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
