"""``sentrycam incidents``: a run's incidents (grouped alerts with a diagnosis).

Reads through the server that holds the database when there is one (DuckDB locks the file) and
opens the file read-only otherwise, like ``sentrycam alerts``; from a file the incidents are
derived from its stored alerts exactly as the server derives them.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from sentrycam.backend.audit.incidents import incidents_of
from sentrycam.backend.cli_alerts import SEVERITY
from sentrycam.backend.cli_data import _get_json, _open_store, _server_for, run_summaries
from sentrycam.backend.cli_runs import resolve_run


def list_incidents(*, db: Path | None, url: str | None, run_id: str | None,
                   token: str | None = None) -> list[dict[str, Any]]:
    """Incident dicts (as ``GET /api/runs/{id}/incidents`` serves them) of one run
    (``run_id``: an id, a unique id prefix or a run name) or of every run."""
    url = url or (_server_for(db) if db is not None else None)
    if url is not None:
        runs = run_summaries(db=None, url=url, token=token)
        run_ids = [resolve_run(run_id, runs)["run_id"]] if run_id else [r["run_id"] for r in runs]
        return [item for rid in run_ids for item in
                _get_json(url, f"/api/runs/{urllib.parse.quote(rid)}/incidents", token)]
    store = _open_store(db)
    try:
        runs = store.run_summaries()
        run_ids = [resolve_run(run_id, runs)["run_id"]] if run_id else [r["run_id"] for r in runs]
        return [item for rid in run_ids for item in incidents_of(rid, store.alerts(rid))]
    finally:
        store.close()


def render_incidents(incidents: list[dict[str, Any]]) -> str:
    """Plain text for humans: one block per incident."""
    if not incidents:
        return "no incidents"
    blocks = []
    for item in incidents:
        runners = ", ".join(f"{r['diagnosis']} {r['score']:.2f}" for r in item["runners_up"])
        blocks.append("\n".join((
            f"run {str(item['run_id'])[:8]}  steps {item['start_step']}-{item['end_step']}  "
            f"severity {item['severity']} {SEVERITY[item['severity']]}  "
            f"{item['diagnosis']} (confidence {item['confidence']:.2f})",
            f"    runners-up: {runners or '-'}",
            f"    evidence: {len(item['alert_ids'])} alerts from {', '.join(item['detectors'])}",
            f"    suggestion: {item['suggestion']}")))
    return "\n".join(blocks)
