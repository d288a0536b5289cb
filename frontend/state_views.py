"""Alerts (list + timeline), the cluster-health trajectory, and the honest status line."""

from __future__ import annotations

import html
import math
from typing import Any, Callable

import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, HoverTool, LinearColorMapper
from bokeh.palettes import Viridis256
from bokeh.plotting import figure

SEVERITY = {0: "none", 1: "developing", 2: "confirmed", 3: "critical"}
SEVERITY_COLOUR = {0: "#999999", 1: "#f0ad4e", 2: "#e8590c", 3: "#c92a2a"}
ALERT_COLUMNS = ("alert_id", "step", "severity", "detector", "layer", "message", "suggestion",
                 "confidence", "acknowledged")
NO_ALERTS = ("No alerts yet. The audit engine raises them here (severity, evidence, a "
             "suggested next step) when a detector sees a warning sign in this run.")


class AlertsView:
    """Live list (with acknowledge) and timeline of a run's alerts; an explanation until the
    first one arrives. ``acknowledge(alert_id)`` is called for each selected row."""

    def __init__(self, acknowledge: Callable[[int], None]) -> None:
        self._acknowledge = acknowledge
        self.alerts: list[dict[str, Any]] = []
        self.empty = pn.pane.HTML(NO_ALERTS, css_classes=["sc-alerts-empty"])
        self.table = pn.widgets.Tabulator(pd.DataFrame(columns=list(ALERT_COLUMNS)),
                                          show_index=False, selectable="checkbox", height=200,
                                          sizing_mode="stretch_width", disabled=True,
                                          visible=False)
        self.ack_button = pn.widgets.Button(name="acknowledge selected", visible=False,
                                            button_type="primary", width=180)
        self.ack_button.on_click(lambda event: self._ack_selected())
        self.source = ColumnDataSource({"step": [], "severity": [], "colour": [],
                                        "detector": [], "message": []}, name="sc-alert-timeline")
        self.timeline = figure(height=130, sizing_mode="stretch_width", title="alert timeline",
                               y_range=(-0.5, 3.5), tools="xpan,xwheel_zoom,reset",
                               x_axis_label="step")
        self.timeline.scatter("step", "severity", source=self.source, size=10,
                              fill_color="colour", line_color=None, marker="triangle")
        self.timeline.add_tools(HoverTool(tooltips=[("step", "@step"), ("detector", "@detector"),
                                                    ("", "@message")]))

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(self.empty, self.table, self.ack_button, pn.pane.Bokeh(self.timeline),
                         css_classes=["sc-alerts"], sizing_mode="stretch_width")

    def set_alerts(self, alerts: list[dict[str, Any]]) -> None:
        self.alerts = alerts
        has = bool(alerts)
        self.empty.visible = not has
        self.table.visible = self.ack_button.visible = has
        rows = [{c: a.get(c) for c in ALERT_COLUMNS} for a in alerts]
        for row in rows:
            row["severity"] = f"{row['severity']} {SEVERITY.get(row['severity'], '')}"
        self.table.value = pd.DataFrame(rows, columns=list(ALERT_COLUMNS))
        self.source.data = {
            "step": [a["step"] for a in alerts], "severity": [a["severity"] for a in alerts],
            "colour": [SEVERITY_COLOUR.get(a["severity"], "#999999") for a in alerts],
            "detector": [a.get("detector") for a in alerts],
            "message": [a.get("message") for a in alerts]}

    def _ack_selected(self) -> None:
        for index in self.table.selection:
            self._acknowledge(int(self.table.value.iloc[index]["alert_id"]))


class HealthView:
    """Cluster-health trajectory of the shown layer: intra-class variance (y) against
    inter-class distance (x), one point per snapshot, coloured by step."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[int, tuple[float, float]]] = {}
        self.layer: str | None = None
        self.source = ColumnDataSource({"step": [], "intra": [], "inter": []},
                                       name="sc-health-points")
        self.mapper = LinearColorMapper(palette=Viridis256, low=0, high=1)
        self.figure = figure(height=260, sizing_mode="stretch_width",
                             title="cluster health (2D map)", x_axis_label="inter-class distance",
                             y_axis_label="intra-class variance", tools="pan,wheel_zoom,reset")
        self.figure.line("inter", "intra", source=self.source, line_color="#aaaaaa")
        self.figure.scatter("inter", "intra", source=self.source, size=7,
                            fill_color={"field": "step", "transform": self.mapper},
                            line_color=None)
        self.figure.add_tools(HoverTool(tooltips=[("step", "@step"), ("intra", "@intra{0.000}"),
                                                  ("inter", "@inter{0.000}")]))

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(pn.pane.Bokeh(self.figure), css_classes=["sc-health"],
                         sizing_mode="stretch_width")

    def take(self, layer: str, steps: np.ndarray, intra: np.ndarray, inter: np.ndarray) -> None:
        points = self.rows.setdefault(layer, {})
        fresh = {int(s): (float(a), float(b)) for s, a, b in zip(steps, intra, inter)
                 if math.isfinite(a) and math.isfinite(b)}
        new_steps = [s for s in fresh if s not in points]
        points.update(fresh)
        if layer != self.layer:
            return
        last = max(self.source.data["step"], default=-1)
        if new_steps and min(new_steps) > last:
            new_steps.sort()
            self.source.stream({"step": new_steps, "intra": [points[s][0] for s in new_steps],
                                "inter": [points[s][1] for s in new_steps]})
        elif new_steps:
            self._redraw()
        self.mapper.update(low=min(points, default=0), high=max(max(points, default=1), 1))

    def show_layer(self, layer: str | None) -> None:
        if layer != self.layer:
            self.layer = layer
            self.figure.title.text = f"cluster health of {layer} (2D map)"
            self._redraw()

    def _redraw(self) -> None:
        points = self.rows.get(self.layer, {})
        steps = sorted(points)
        self.source.data = {"step": steps, "intra": [points[s][0] for s in steps],
                            "inter": [points[s][1] for s in steps]}


class StatusView:
    """One line saying honestly where the run and the dashboard stand."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {"latest_step": None, "status": "connecting",
                                       "snapshots": 0, "maps": 0}
        self.pane = pn.pane.HTML(self._render(), css_classes=["sc-status"],
                                 sizing_mode="stretch_width")

    def panel(self) -> pn.viewable.Viewable:
        return self.pane

    def update(self, **values: Any) -> None:
        if values.get("latest_step") is not None and self.values.get("latest_step") is not None:
            values["latest_step"] = max(values["latest_step"], self.values["latest_step"])
        changed = {k: v for k, v in values.items() if self.values.get(k) != v}
        if changed:
            self.values.update(changed)
            self.pane.object = self._render()

    def _render(self) -> str:
        v = self.values
        step = "-" if v["latest_step"] is None else str(v["latest_step"])
        parts = [f"<b>{html.escape(str(v.get('name') or ''))}</b>",
                 html.escape(str(v["status"])),
                 f"latest step <span class='sc-latest-step'>{step}</span>",
                 self._map_state(), self._projector_state(),
                 f"capture overhead {_percent(v.get('overhead'))}",
                 f"dropped by capture {_count(v.get('dropped'))}",
                 f"dropped on the way to this page {_count(v.get('hub_dropped', 0))}"]
        return "<div class='sc-status-text'>" + " &middot; ".join(p for p in parts if p) + "</div>"

    def _map_state(self) -> str:
        v = self.values
        if not v["snapshots"]:
            return "<span class='sc-waiting'>waiting for the first snapshot</span>"
        behind = v["snapshots"] - v["maps"]
        if not v["maps"]:
            return f"{v['snapshots']} snapshots, no 2D map yet (projector warming up or absent)"
        return f"{v['maps']} of {v['snapshots']} snapshots mapped" + (
            f", projector behind by {behind}" if behind > 0 else "")

    def _projector_state(self) -> str:
        state = self.values.get("projector")
        if not state:
            return "projector: state unknown"
        text = state.get("state") or state.get("status") or ", ".join(
            f"{k} {v}" for k, v in list(state.items())[:3])
        return f"projector: {html.escape(str(text))}"


def _percent(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "unknown"
    return f"{100 * value:.2f}%" if math.isfinite(value) else "unknown"


def _count(value: Any) -> str:
    return "unknown" if value is None else str(value)
