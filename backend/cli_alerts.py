"""``sentrycam alerts``: the audit engine's alerts of a database or a running server.

Like ``inspect``, it reads through the server that holds the file when there is one (DuckDB
locks the file), and opens the file read-only otherwise.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from sentrycam.backend.cli_data import _get_json, _open_store, _server_for
from sentrycam.backend.cli_errors import CLIError

COLUMNS = ("run_id", "step", "severity", "detector", "layer", "duration", "magnitude",
           "confidence", "message")
SEVERITY = ("none", "developing", "confirmed", "critical")


def list_alerts(*, db: Path | None, url: str | None, run_id: str | None,
                token: str | None = None, min_severity: int = 0) -> list[dict[str, Any]]:
    """Alert dicts (as ``Store.alerts`` returns them) of one run or of every run."""
    url = url or (_server_for(db) if db is not None else None)
    if url is not None:
        return _alerts_from_server(url, run_id, token, min_severity)
    from sentrycam.backend.store import UnknownRunError

    store = _open_store(db)
    try:
        if run_id is not None:
            store.run_summaries(run_id)  # a clear error for an unknown run
        return store.alerts(run_id, min_severity=min_severity)
    except UnknownRunError as exc:
        raise CLIError(str(exc)) from None
    finally:
        store.close()


def _alerts_from_server(url: str, run_id: str | None, token: str | None,
                        min_severity: int) -> list[dict[str, Any]]:
    run_ids = [run_id] if run_id else [r["run_id"] for r in _get_json(url, "/api/runs", token)]
    alerts: list[dict[str, Any]] = []
    for rid in run_ids:
        path = f"/api/runs/{urllib.parse.quote(rid)}/alerts?min_severity={int(min_severity)}"
        alerts.extend(_get_json(url, path, token))
    return alerts


def render_alerts(alerts: list[dict[str, Any]]) -> str:
    """A plain-text table for humans, followed by each alert's suggestion."""
    if not alerts:
        return "no alerts"
    rows = [[_cell(alert, column) for column in COLUMNS] for alert in alerts]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS[:-1])]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS[:-1], widths)) + "  message"]
    for alert, row in zip(alerts, rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths))
                     + "  " + row[-1])
        if alert.get("suggestion"):
            lines.append(" " * 4 + str(alert["suggestion"]))
    return "\n".join(lines)


def _cell(alert: dict[str, Any], column: str) -> str:
    value = alert.get(column)
    if column == "run_id" and value:
        return str(value)[:8]
    if column == "severity" and isinstance(value, int) and 0 <= value <= 3:
        return f"{value} {SEVERITY[value]}"
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
