"""Incidents: the run's alerts grouped into events, each with one diagnosis, listed above the
alerts and marked as spans on the curves and the embedding timeline.

The server groups and diagnoses (``GET /api/runs/{run_id}/incidents``); this module only shows
what it answers. An incident row gives severity, its steps, the diagnosis with its confidence
and runners-up, and the suggestion; expanding it lists its alerts with their evidence plots.
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource

from sentrycam.frontend.alert_evidence import evidence_html
from sentrycam.frontend.state_views import SEVERITY_COLOUR, severity_name

#: Columns of an incident span source (curves, embedding timeline): x0/x1 in steps.
SPAN_COLUMNS = ("start", "end", "colour", "severity", "diagnosis")
#: Opacity of a span's fill: the curves stay readable under it.
SPAN_ALPHA = 0.15
#: The table's columns; ``incident_id`` is kept hidden (expanding a row looks its alerts up).
INCIDENT_COLUMNS = ("incident_id", "severity", "steps", "diagnosis", "suggestion", "alerts")
#: Shares of the table's width: the text columns wrap, so with the expand button's column the
#: table never scrolls sideways.
INCIDENT_WIDTHS = {"severity": "9%", "steps": "8%", "diagnosis": "28%", "suggestion": "42%",
                   "alerts": "6%"}
INCIDENTS_PER_PAGE = 5
#: An expanded incident lists its first alerts (the ones its diagnosis weighs most); the rest
#: are counted, and all are in the alerts table.
SHOWN_ALERTS = 8
NO_INCIDENTS = ("No incident. Alerts that belong to one event are grouped here, with what "
                "probably went wrong, how sure the diagnosis is, and what to try.")


def span_source(name: str) -> ColumnDataSource:
    """An empty incident span source (:data:`SPAN_COLUMNS`) named ``name``."""
    return ColumnDataSource({column: [] for column in SPAN_COLUMNS}, name=name)


def draw_spans(fig: Any, source: ColumnDataSource) -> Any:
    """Shade each incident of ``source`` across ``fig``'s height, in its severity's colour."""
    return fig.vstrip(x0="start", x1="end", source=source, fill_color="colour",
                      fill_alpha=SPAN_ALPHA, line_color="colour", line_alpha=0.5)


def span_columns(incidents: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """The span source's columns of ``incidents`` (as the incidents route lists them). A span
    covers its end step, so an incident of one step is one step wide rather than invisible."""
    return {"start": [int(i["start_step"]) for i in incidents],
            "end": [int(i["end_step"]) + 1 for i in incidents],
            "colour": [_colour(i["severity"]) for i in incidents],
            "severity": [severity_name(i["severity"]) for i in incidents],
            "diagnosis": [diagnosis_text(i) for i in incidents]}


def diagnosis_text(incident: Mapping[str, Any]) -> str:
    """``instability (confidence 0.82; also stalled 0.10)``; ``unknown`` reads as an abstain."""
    runners = ", ".join(f"{r['diagnosis']} {float(r['score']):.2f}"
                        for r in incident.get("runners_up") or [])
    name = str(incident["diagnosis"])
    if name == "unknown":
        name = "unknown: the evidence does not single out one cause"
    text = f"{name} (confidence {float(incident['confidence']):.2f}"
    return text + (f"; also {runners})" if runners else ")")


class IncidentsView:
    """The incident list. :meth:`set_incidents` takes the route's answer, :meth:`set_alerts`
    the run's alerts (what an expanded incident shows)."""

    def __init__(self) -> None:
        self.incidents: list[dict[str, Any]] = []
        self._alerts: dict[int, dict[str, Any]] = {}
        self.empty = pn.pane.HTML(NO_INCIDENTS, css_classes=["sc-incidents-empty"])
        wrap = {"type": "textarea"}
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=list(INCIDENT_COLUMNS)), show_index=False,
            layout="fit_columns", widths=INCIDENT_WIDTHS, hidden_columns=["incident_id"],
            formatters={"diagnosis": wrap, "suggestion": wrap, "severity": {"type": "html"}},
            row_content=self._alerts_of_row, pagination="local",
            page_size=INCIDENTS_PER_PAGE, sizing_mode="stretch_width", disabled=True,
            visible=False)

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(self.empty, self.table, css_classes=["sc-incidents"],
                         sizing_mode="stretch_width")

    def set_alerts(self, alerts: list[dict[str, Any]]) -> None:
        self._alerts = {int(a["alert_id"]): a for a in alerts}

    def set_incidents(self, incidents: list[dict[str, Any]]) -> None:
        if incidents == self.incidents:
            return  # an unchanged answer must not collapse the rows a user expanded
        self.incidents = incidents
        self.empty.visible = not incidents
        self.table.visible = bool(incidents)
        rows = [{"incident_id": i["incident_id"],
                 "severity": _severity_html(i["severity"]),
                 "steps": f"{i['start_step']}-{i['end_step']}",
                 "diagnosis": diagnosis_text(i), "suggestion": i.get("suggestion") or "",
                 "alerts": len(i.get("alert_ids") or [])} for i in incidents]
        self.table.value = pd.DataFrame(rows, columns=list(INCIDENT_COLUMNS))

    def _alerts_of_row(self, row: pd.Series) -> pn.viewable.Viewable:
        """An expanded incident: its first :data:`SHOWN_ALERTS` alerts, in the order they
        opened, with their evidence."""
        incident = next((i for i in self.incidents
                         if i["incident_id"] == row["incident_id"]), None)
        ids = incident.get("alert_ids", []) if incident else []
        known = [self._alerts[a] for a in ids if a in self._alerts]
        if not known:
            return pn.pane.HTML("<i>its alerts are not loaded yet</i>")
        body = "".join(_alert_html(alert) for alert in known[:SHOWN_ALERTS])
        more = len(ids) - min(len(known), SHOWN_ALERTS)
        tail = (f"<p class='sc-incident-more'>and {more} more (in the alerts table below)</p>"
                if more > 0 else "")
        return pn.pane.HTML(
            "<table class='sc-incident-alerts' style='width:100%;table-layout:fixed'>"
            f"{body}</table>{tail}", sizing_mode="stretch_width")


def _colour(severity: int) -> str:
    return SEVERITY_COLOUR.get(severity, SEVERITY_COLOUR[0])


def _severity_html(severity: int) -> str:
    return (f"<span style='color:{_colour(severity)};font-weight:bold'>"
            f"{html.escape(severity_name(severity))}</span>")


def _alert_html(alert: Mapping[str, Any]) -> str:
    where = f" on {alert['layer']}" if alert.get("layer") else ""
    head = (f"{_severity_html(alert['severity'])} <b>{html.escape(str(alert['detector']))}</b>"
            f"{html.escape(where)} at step {int(alert['step'])}: "
            f"{html.escape(str(alert.get('message') or ''))}")
    cell = "style='vertical-align:top;white-space:normal;overflow-wrap:anywhere;padding:3px'"
    return (f"<tr class='sc-incident-alert'><td {cell} width='60%'>{head}</td>"
            f"<td {cell}>{evidence_html(alert.get('evidence'))}</td></tr>")
