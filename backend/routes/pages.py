"""``GET /``: a small self-refreshing HTML list of runs (no JavaScript).

A placeholder until the Panel dashboard replaces it: it shows that the server is alive and what
it has received. The page reloads itself every 2 s with a meta refresh, which keeps the URL and
so a ``?token=`` the user opened it with.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from sentrycam.backend.routes import state_of

router = APIRouter(tags=["pages"])

REFRESH_S = 2
COLUMNS = ("name", "status", "last step", "snapshots", "dropped", "overhead")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<title>sentrycam</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; }}
th, td {{ padding: .3rem .8rem; border-bottom: 1px solid #ddd; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.live {{ color: #0a7d28; font-weight: 600; }}
.muted {{ color: #777; }}
</style></head>
<body><h1>sentrycam</h1>
{content}
<p class="muted">{db} &middot; refreshes every {refresh} s</p>
</body></html>
"""


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    state = state_of(request)
    runs = state.store.run_summaries()
    content = _runs_table(runs) if runs else (
        '<p class="muted">waiting for the first run: attach capture to a model with '
        "<code>capture.attach(model)</code> and it appears here</p>")
    page = _PAGE.format(refresh=REFRESH_S, content=content, db=escape(str(state.store.path)))
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


def _runs_table(runs: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    rows = "\n".join(_run_row(run) for run in runs)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>"


def _run_row(run: dict[str, Any]) -> str:
    status = str(run.get("status") or "unknown")
    shown = '<span class="live">live</span>' if status == "running" else escape(status)
    cells = [
        f'<td title="{escape(str(run.get("run_id", "")))}">{escape(str(run.get("name") or "-"))}</td>',
        f"<td>{shown}</td>",
        f'<td class="num">{_number(run.get("last_step"))}</td>',
        f'<td class="num">{_number(run.get("n_snapshots"))}</td>',
        f'<td class="num">{_number(run.get("dropped"))}</td>',
        f'<td class="num">{_percent(run.get("capture_overhead"))}</td>',
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _number(value: Any) -> str:
    return "-" if value is None else escape(str(value))


def _percent(fraction: Any) -> str:
    """Capture overhead is a fraction of step time; shown as a percentage."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        return "-"
    return f"{100.0 * value:.2f}%" if math.isfinite(value) else "-"
