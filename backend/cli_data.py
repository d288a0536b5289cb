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
from typing import Any, Callable

from sentrycam.backend.cli_errors import CLIError
from sentrycam.backend.cli_runs import resolve_run

#: Bytes of a run (see :mod:`sentrycam.backend.store.sizes`).
SIZE_COLUMNS = ("feature_bytes", "other_bytes", "snapshots_with_features")
SUMMARY_COLUMNS = ("run_id", "name", "status", "last_step", "n_scalar_rows", "n_snapshots",
                   "captured_layers", "telemetry_layers", "n_probe", "n_embeddings", "n_alerts",
                   "dropped", "capture_overhead", "snapshot_every", *SIZE_COLUMNS)
#: Columns of the per-snapshot table of ``inspect --run``.
SNAPSHOT_COLUMNS = ("step", "layers", "layers_with_features", "feature_bytes", "other_bytes")


def _server_for(db: Path) -> str | None:
    from sentrycam.protocol.server_info import read_info_file

    info = read_info_file(db)
    return info["url"] if info else None


def _get_json(url: str, path: str, token: str | None) -> Any:
    token = token or os.environ.get("SENTRYCAM_TOKEN")
    try:
        request = urllib.request.Request(url.rstrip("/") + path)
    except ValueError:
        raise CLIError(f"{url!r} is not a server URL; give one like http://127.0.0.1:8765"
                       ) from None
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise CLIError(f"{url}{path} answered {exc.code}: {server_detail(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CLIError(f"cannot reach a sentrycam server at {url}: {exc}; "
                       "start one with `sentrycam serve --db FILE`") from None
    except ValueError:
        raise CLIError(f"{url}{path} did not answer JSON: is {url} a sentrycam server?") from None


def server_detail(body: bytes | None) -> str:
    """The text of a server's error answer: its ``{"detail": ...}``, else the raw body."""
    text = (body or b"").decode(errors="replace")
    try:
        return str(json.loads(text)["detail"])
    except (ValueError, KeyError, TypeError):
        return text or "no reason given"


def _open_store(db: Path):
    from sentrycam.backend.store import Store

    if not db.exists():
        raise CLIError(f"no database file at {db}")
    try:
        return Store(db, read_only=True)
    except Exception as exc:  # the store's own message names the file and the fix
        raise CLIError(str(exc)) from None


def _read(*, db: Path | None, url: str | None, token: str | None, api_path: str,
          read: Callable[[Any], Any]) -> Any:
    """``api_path`` of the server at ``url``, else of the server holding ``db``, else
    ``read(store)`` of the file ``db`` itself (opened read-only)."""
    url = url or (_server_for(db) if db is not None else None)
    if url is not None:
        return _get_json(url, api_path, token)
    store = _open_store(db)
    try:
        return read(store)
    finally:
        store.close()


def run_summaries(*, db: Path | None, url: str | None, token: str | None = None
                  ) -> list[dict[str, Any]]:
    """Every run's summary (see ``Store.run_summaries``), newest first, read as :func:`_read`
    reads."""
    return _read(db=db, url=url, token=token, api_path="/api/runs",
                 read=lambda store: store.run_summaries())


def run_events(run_id: str, *, db: Path | None, url: str | None, token: str | None = None
               ) -> list[dict[str, Any]]:
    """The run's event log (see ``Store.events``), oldest first, read as :func:`_read` reads."""
    return _read(db=db, url=url, token=token,
                 api_path=f"/api/runs/{urllib.parse.quote(run_id)}/events",
                 read=lambda store: store.events(run_id))


def storage(run_id: str | None, *, db: Path | None, url: str | None,
            token: str | None = None) -> dict[str, Any]:
    """The store's bytes (see ``Store.storage``) of every run, or of one run with each of
    its snapshots, read as :func:`_read` reads."""
    path = ("/api/storage" if run_id is None
            else f"/api/runs/{urllib.parse.quote(run_id)}/storage")
    return _read(db=db, url=url, token=token, api_path=path,
                 read=lambda store: store.storage(run_id))


def inspect_runs(*, db: Path | None, url: str | None, run_id: str | None,
                 token: str | None = None) -> list[dict[str, Any]]:
    """One summary dict per run, newest first, or of the one run ``run_id`` names (an id, a
    unique id prefix or a name), with its layers split by :func:`split_layers` and its bytes
    added by :func:`add_sizes`; the one run's summary adds ``events``, the latest event of
    each kind (e.g. how the overhead budget shaped the capture schedule), in step order."""
    runs = run_summaries(db=db, url=url, token=token)
    if not run_id:
        return add_sizes([split_layers(run) for run in runs],
                         storage(None, db=db, url=url, token=token))
    run = split_layers(resolve_run(run_id, runs))
    latest = {event["event"]: event for event in run_events(run["run_id"], db=db, url=url,
                                                            token=token)}
    run["events"] = sorted(latest.values(), key=lambda event: event["step"])
    return add_sizes([run], storage(run["run_id"], db=db, url=url, token=token))


def add_sizes(runs: list[dict[str, Any]], sizes: dict[str, Any]) -> list[dict[str, Any]]:
    """The summaries with each run's bytes from ``sizes`` (``Store.storage``):
    feature_bytes, other_bytes, snapshots_with_features, and store_file_bytes (the whole
    file with its write-ahead log, the same in every summary); with one run's sizes, also
    ``snapshot_bytes``, one entry per snapshot step."""
    file_bytes = sizes["file_bytes"] + sizes["wal_bytes"]
    for run in runs:
        mine = sizes["runs"].get(run["run_id"], {})
        run.update({key: mine.get(key, 0) for key in SIZE_COLUMNS}, store_file_bytes=file_bytes)
        if "snapshots" in sizes:
            run["snapshot_bytes"] = sizes["snapshots"]
    return runs


def split_layers(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with ``layers`` (every layer anything was stored for) replaced by
    ``captured_layers`` (the layers attach hooked: snapshots and activation statistics, as the
    run's config lists them) and ``telemetry_layers`` (layers with only parameter telemetry)."""
    stored = summary.get("layers") or []
    captured = [layer["name"] for layer in (summary.get("config") or {}).get("layers", [])
                if isinstance(layer, dict) and "name" in layer]
    split = {key: value for key, value in summary.items() if key != "layers"}
    split["captured_layers"] = captured
    split["telemetry_layers"] = [layer for layer in stored if layer not in captured]
    return split


def export_run(*, db: Path, run_id: str, out: Path) -> list[Path]:
    """Write the run's tables as Parquet files under ``out``; returns their paths. ``run_id``
    may be a unique id prefix or a run name."""
    server = _server_for(db)
    if server is not None:
        raise CLIError(f"a server ({server}) holds this database; stop it with "
                       f"`sentrycam stop --db {db}` or export after it has exited")
    store = _open_store(db)
    try:
        return store.export_run(resolve_run(run_id, store.run_summaries())["run_id"], out)
    finally:
        store.close()


def render_table(runs: list[dict[str, Any]]) -> str:
    """A plain-text table of run summaries for humans."""
    if not runs:
        return "no runs"
    lines = _columns(runs, SUMMARY_COLUMNS)
    if len(runs) == 1:
        lines += [f"captured layers (maps, activation statistics): "
                  f"{', '.join(runs[0].get('captured_layers') or []) or 'none'}",
                  f"telemetry-only layers (parameter norms, updates): "
                  f"{', '.join(runs[0].get('telemetry_layers') or []) or 'none'}"]
        lines += [f"{event['event']} (step {event['step']}): {event['message']}"
                  for event in runs[0].get("events") or []]
    if "store_file_bytes" in runs[0]:
        lines.append(f"store file: {_bytes(runs[0]['store_file_bytes'])} on disk (bytes "
                     "above: data, uncompressed)")
    if runs[0].get("snapshot_bytes"):
        lines += ["bytes per snapshot:", *_columns(runs[0]["snapshot_bytes"], SNAPSHOT_COLUMNS)]
    return "\n".join(lines)


def _columns(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[str]:
    """A header line and one line per row, each column as wide as its widest cell."""
    cells = [[_cell(row.get(col), col) for col in columns] for row in rows]
    widths = [max(len(col), *(len(line[i]) for line in cells)) for i, col in enumerate(columns)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
            for line in [list(columns), *cells]]


def _bytes(count: int) -> str:
    """``count`` bytes for humans: 512 B, 8.5 MiB ..."""
    size, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"


def _cell(value: Any, column: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, list):  # layer names: the table shows how many
        return str(len(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    if column.endswith("_bytes"):
        return _bytes(value)
    return str(value)
