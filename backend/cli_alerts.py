"""``sentrycam alerts``: the audit engine's alerts of a database or a running server.

Like ``inspect``, it reads through the server that holds the file when there is one (DuckDB
locks the file), and opens the file read-only otherwise.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from sentrycam.backend.cli_data import _get_json, _open_store, _server_for, run_summaries
from sentrycam.backend.cli_runs import resolve_run

COLUMNS = ("run_id", "step", "severity", "detector", "layer", "duration", "magnitude",
           "confidence", "message")
SEVERITY = ("none", "developing", "confirmed", "critical")


def list_alerts(*, db: Path | None, url: str | None, run_id: str | None,
                token: str | None = None, min_severity: int = 0) -> list[dict[str, Any]]:
    """Alert dicts (as ``Store.alerts`` returns them) of one run (``run_id``: an id, a unique
    id prefix or a run name) or of every run."""
    url = url or (_server_for(db) if db is not None else None)
    if url is not None:
        runs = run_summaries(db=None, url=url, token=token)
        run_ids = [resolve_run(run_id, runs)["run_id"]] if run_id else [r["run_id"] for r in runs]
        query = f"alerts?min_severity={int(min_severity)}"
        return [alert for rid in run_ids
                for alert in _get_json(url, f"/api/runs/{urllib.parse.quote(rid)}/{query}", token)]
    store = _open_store(db)
    try:
        wanted = resolve_run(run_id, store.run_summaries())["run_id"] if run_id else None
        return store.alerts(wanted, min_severity=min_severity)
    finally:
        store.close()


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
