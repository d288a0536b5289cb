"""Alerts (list + timeline), the cluster-health trajectory, and the honest status line."""

from __future__ import annotations

import html
import math
from typing import Any, Callable

import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import (ColorBar, ColumnDataSource, DataRange1d, FactorRange, HoverTool,
                          LinearColorMapper)
from bokeh.palettes import Viridis256
from bokeh.plotting import figure

from sentrycam.frontend.alert_evidence import evidence_html
from sentrycam.frontend.plot_pane import plot_pane

SEVERITY = {0: "none", 1: "developing", 2: "confirmed", 3: "critical"}
SEVERITY_COLOUR = {0: "#999999", 1: "#f0ad4e", 2: "#e8590c", 3: "#c92a2a"}
#: The table's columns, in order; ``alert_id`` is kept hidden (acknowledging needs it).
ALERT_COLUMNS = ("alert_id", "step", "severity", "detector", "layer", "message", "suggestion",
                 "evidence", "acknowledged")
#: Share of the table's width per column: the text columns wrap, so the table never scrolls
#: sideways (the rest of the width is the checkbox column's).
ALERT_WIDTHS = {"step": "5%", "severity": "8%", "detector": "10%", "layer": "8%",
                "message": "22%", "suggestion": "22%", "evidence": "15%", "acknowledged": "4%"}
#: Short headers of narrow columns.
ALERT_TITLES = {"acknowledged": "ack"}
ALERTS_PER_PAGE = 8
#: Alert timeline: pixels per detector row, and the height without rows.
TIMELINE_ROW_PX, TIMELINE_FRAME_PX = 26, 80
NO_ALERTS = ("No alerts yet. The audit engine raises them here (severity, evidence, a "
             "suggested next step) when a detector sees a warning sign in this run.")


class AlertsView:
    """Live list (with acknowledge) and timeline of a run's alerts; an explanation until the
    first one arrives. ``acknowledge(alert_id)`` is called for each selected row.

    The timeline has one row per detector and one marker per (detector, step), however many
    alerts share it (hover gives the count), coloured by the highest severity there."""

    def __init__(self, acknowledge: Callable[[int], None]) -> None:
        self._acknowledge = acknowledge
        self.alerts: list[dict[str, Any]] = []
        self.empty = pn.pane.HTML(NO_ALERTS, css_classes=["sc-alerts-empty"])
        wrap = {"type": "textarea"}
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=list(ALERT_COLUMNS)), show_index=False, selectable="checkbox",
            layout="fit_columns", widths=ALERT_WIDTHS, titles=ALERT_TITLES,
            hidden_columns=["alert_id"],
            formatters={"message": wrap, "suggestion": wrap, "evidence": {"type": "html"}},
            pagination="local", page_size=ALERTS_PER_PAGE, sizing_mode="stretch_width",
            disabled=True, visible=False)
        self.ack_button = pn.widgets.Button(name="acknowledge selected", visible=False,
                                            button_type="primary", width=180)
        self.ack_button.on_click(lambda event: self._ack_selected())
        self.source = ColumnDataSource({"step": [], "severity": [], "colour": [], "detector": [],
                                        "count": [], "message": []}, name="sc-alert-timeline")
        self.timeline = figure(height=TIMELINE_FRAME_PX + TIMELINE_ROW_PX,
                               name="sc-alert-timeline-figure", sizing_mode="stretch_width",
                               title="alert timeline (one row per detector)",
                               x_range=DataRange1d(start=0),  # the run from its start
                               y_range=FactorRange(factors=[]), tools="xpan,xwheel_zoom,reset",
                               x_axis_label="step", visible=False)  # until the first alert
        self.timeline.scatter("step", "detector", source=self.source, size=11,
                              fill_color="colour", line_color=None, marker="triangle")
        self.timeline.add_tools(HoverTool(tooltips=[
            ("step", "@step"), ("detector", "@detector"), ("alerts", "@count"),
            ("severity", "@severity"), ("", "@message")]))

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(self.empty, self.table, self.ack_button, plot_pane(self.timeline),
                         css_classes=["sc-alerts"], sizing_mode="stretch_width")

    def set_alerts(self, alerts: list[dict[str, Any]]) -> None:
        self.alerts = alerts
        has = bool(alerts)
        self.empty.visible = not has
        self.table.visible = self.ack_button.visible = has
        rows = [{c: a.get(c) for c in ALERT_COLUMNS} for a in alerts]
        for row in rows:
            row["severity"] = severity_name(row["severity"])
            row["evidence"] = evidence_html(row["evidence"])
        self.table.value = pd.DataFrame(rows, columns=list(ALERT_COLUMNS))
        self._draw_timeline(alerts)

    def _draw_timeline(self, alerts: list[dict[str, Any]]) -> None:
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for alert in alerts:
            groups.setdefault((str(alert.get("detector")), int(alert["step"])), []).append(alert)
        top = {key: max(group, key=lambda a: a["severity"]) for key, group in groups.items()}
        keys = sorted(groups, key=lambda key: (key[1], key[0]))
        self.source.data = {
            "step": [step for _, step in keys], "detector": [d for d, _ in keys],
            "count": [len(groups[key]) for key in keys],
            "severity": [severity_name(top[key]["severity"]) for key in keys],
            "colour": [SEVERITY_COLOUR.get(top[key]["severity"], "#999999") for key in keys],
            "message": [str(top[key].get("message") or "") for key in keys]}
        detectors = sorted({d for d, _ in keys})
        self.timeline.y_range.factors = detectors
        self.timeline.height = TIMELINE_FRAME_PX + TIMELINE_ROW_PX * max(len(detectors), 1)
        self.timeline.visible = bool(keys)

    def _ack_selected(self) -> None:
        for index in self.table.selection:
            self._acknowledge(int(self.table.value.iloc[index]["alert_id"]))


def severity_name(severity: int) -> str:
    """``2 confirmed``."""
    return f"{severity} {SEVERITY.get(severity, '')}"


class HealthView:
    """Cluster health of the shown layer's maps: the trajectory of intra-class variance (y)
    against inter-class distance (x), one point per snapshot coloured by step; and a class x
    snapshot heatmap of each class's spread, where clicking a cell calls ``on_pick(step)``."""

    def __init__(self, on_pick: Callable[[int], None]) -> None:
        self._on_pick = on_pick
        self.rows: dict[str, dict[int, tuple[float, float, list[float]]]] = {}
        self.classes: dict[str, list[str]] = {}
        self.layer: str | None = None
        self.source = ColumnDataSource({"step": [], "intra": [], "inter": []},
                                       name="sc-health-points")
        self.class_source = ColumnDataSource({"step": [], "cls": [], "spread": []},
                                             name="sc-health-classes")
        self.mapper = LinearColorMapper(palette=Viridis256, low=0, high=1)
        self.spread_mapper = LinearColorMapper(palette=Viridis256, low=0, high=1,
                                               nan_color="#eeeeee")
        self.figure = self._trajectory()
        self.class_figure = figure(height=200, sizing_mode="stretch_width",
                                   title="spread of each class per snapshot (2D map)",
                                   y_range=FactorRange(factors=[]), tools="tap,xpan,reset",
                                   x_axis_label="step", visible=False)
        self._cells = self.class_figure.rect(
            "step", "cls", width=1, height=0.95, source=self.class_source, line_color=None,
            fill_color={"field": "spread", "transform": self.spread_mapper})
        self.class_figure.add_tools(HoverTool(tooltips=[("class", "@cls"), ("step", "@step"),
                                                        ("spread", "@spread{0.000}")]))
        self.class_figure.add_layout(ColorBar(color_mapper=self.spread_mapper, width=10,
                                              title="spread", name="sc-health-colour-bar"),
                                     "right")
        self.class_source.selected.on_change("indices", lambda a, o, new: self._picked(new))

    def _trajectory(self) -> Any:
        fig = figure(height=260, sizing_mode="stretch_width", title="cluster health (2D map)",
                     x_axis_label="inter-class distance", y_axis_label="intra-class variance",
                     tools="pan,wheel_zoom,reset", visible=False)
        fig.line("inter", "intra", source=self.source, line_color="#aaaaaa")
        fig.scatter("inter", "intra", source=self.source, size=7, line_color=None,
                    fill_color={"field": "step", "transform": self.mapper})
        fig.add_tools(HoverTool(tooltips=[("step", "@step"), ("intra", "@intra{0.000}"),
                                          ("inter", "@inter{0.000}")]))
        fig.add_layout(ColorBar(color_mapper=self.mapper, width=10, title="step",
                                name="sc-health-step-colour-bar"), "right")
        return fig

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(plot_pane(self.figure), plot_pane(self.class_figure),
                         css_classes=["sc-health"], sizing_mode="stretch_width")

    def take(self, layer: str, steps: Any, intra: Any, inter: Any, spread: Any,
             classes: list[Any]) -> None:
        """Add maps' health: per step, intra/inter and ``spread`` [S, C] for ``classes``."""
        points = self.rows.setdefault(layer, {})
        self.classes[layer] = [str(c) for c in classes]
        new_steps = []
        for i, step in enumerate(int(s) for s in steps):
            if step not in points and math.isfinite(intra[i]) and math.isfinite(inter[i]):
                new_steps.append(step)
            points[step] = (float(intra[i]), float(inter[i]), [float(v) for v in spread[i]])
        if layer != self.layer or not new_steps:
            return
        if min(new_steps) > max(self.source.data["step"], default=-1):
            new_steps.sort()
            self.source.stream(self._trajectory_columns(new_steps))
            self.class_source.stream(self._class_columns(new_steps))
            self._rescale()
        else:
            self._redraw()

    def show_layer(self, layer: str | None) -> None:
        if layer != self.layer:
            self.layer = layer
            self.figure.title.text = f"cluster health of {layer} (2D map)"
            self._redraw()

    def _trajectory_columns(self, steps: list[int]) -> dict[str, list]:
        points = self.rows.get(self.layer, {})
        return {"step": steps, "intra": [points[s][0] for s in steps],
                "inter": [points[s][1] for s in steps]}

    def _class_columns(self, steps: list[int]) -> dict[str, list]:
        points, classes = self.rows.get(self.layer, {}), self.classes.get(self.layer, [])
        cells = [(s, c, points[s][2][i]) for s in steps for i, c in enumerate(classes)
                 if i < len(points[s][2])]
        return {"step": [s for s, _, _ in cells], "cls": [c for _, c, _ in cells],
                "spread": [v for _, _, v in cells]}

    def _redraw(self) -> None:
        steps = sorted(s for s, row in self.rows.get(self.layer, {}).items()
                       if math.isfinite(row[0]) and math.isfinite(row[1]))
        self.source.data = self._trajectory_columns(steps)
        self.class_source.data = self._class_columns(sorted(self.rows.get(self.layer, {})))
        self._rescale()

    def _rescale(self) -> None:
        steps = self.source.data["step"]
        self.mapper.update(low=min(steps, default=0), high=max(max(steps, default=1), 1))
        self.class_figure.y_range.factors = self.classes.get(self.layer, [])
        gaps = np.diff(sorted(set(self.class_source.data["step"])))
        self._cells.glyph.width = float(np.median(gaps)) if len(gaps) else 1.0
        spreads = np.asarray(self.class_source.data["spread"], dtype=np.float64)
        finite = spreads[np.isfinite(spreads)]
        if len(finite):
            self.spread_mapper.update(low=float(finite.min()),
                                      high=float(max(finite.max(), finite.min() + 1e-9)))
        # shown once they have data, after their ranges can be computed (frontend/__init__.py)
        self.figure.visible = bool(len(steps))
        self.class_figure.visible = bool(len(self.class_source.data["step"]))

    def _picked(self, indices: list[int]) -> None:
        if indices:
            self._on_pick(int(self.class_source.data["step"][indices[0]]))


#: The status line's ``budget`` value for a run attached with ``overhead_budget=None``.
FIXED_SCHEDULE = "fixed"


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
                 html.escape(str(v["status"])), self._storage_state(),
                 f"latest step <span class='sc-latest-step'>{step}</span>",
                 self._map_state(), self._projector_state(),
                 self._overhead_state(),
                 f"dropped by capture {_count(v.get('dropped'))}",
                 f"dropped on the way to this page {_count(v.get('hub_dropped', 0))}"]
        return "<div class='sc-status-text'>" + " &middot; ".join(p for p in parts if p) + "</div>"

    def _storage_state(self) -> str:
        """Empty while the server stores; else why it cannot (the trainer spools meanwhile)."""
        reason = self.values.get("storage_failure")
        if not reason:
            return ""
        return ("<span class='sc-storage-failure'>the server cannot store new data: "
                f"{html.escape(str(reason))}; trainers keep it and resend</span>")

    def _overhead_state(self) -> str:
        """What the overhead number measures, and against what: under a fixed schedule (no
        budget, as in ``sentrycam demo``) it is the price of that schedule, not of the
        defaults."""
        measured = f"capture took {_percent(self.values.get('overhead'))} of step time"
        budget = self.values.get("budget")
        if budget == FIXED_SCHEDULE:
            return f"{measured} (fixed schedule, no overhead budget)"
        if budget is None:
            return measured
        return f"{measured} (budget {_percent(budget)})"

    def _map_state(self) -> str:
        v = self.values
        if not v["snapshots"]:
            return "<span class='sc-waiting'>waiting for the first snapshot</span>"
        behind = v["snapshots"] - v["maps"]
        if not v["maps"]:
            why = ("maps wait while training uses every core"
                   if (v.get("projector") or {}).get("waiting_for_cpu")
                   else "projector warming up or absent")
            return f"{plural(v['snapshots'], 'snapshot')}, no 2D map yet ({why})"
        return f"{v['maps']} of {plural(v['snapshots'], 'snapshot')} mapped" + (
            f", projector behind by {behind}" if behind > 0 else "")

    def _projector_state(self) -> str:
        state = self.values.get("projector")
        if not state:
            return "projector: state unknown"
        text = str(state.get("state") or state.get("status") or "unknown")
        queued = state.get("queue_depth") or 0
        if queued:
            text += f", {queued} snapshot(s) queued"
        if state.get("skipped"):
            text += f", {state['skipped']} skipped"
        if state.get("waiting_for_cpu"):
            text += ", maps wait while training uses every core"
            if state.get("max_deferral_s"):
                text += f" (at most {float(state['max_deferral_s']):g} s each)"
        return f"projector: {html.escape(text)}"


def plural(count: int, noun: str) -> str:
    """``1 snapshot``, ``2 snapshots``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _percent(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "unknown"
    return f"{100 * value:.2f}%" if math.isfinite(value) else "unknown"


def _count(value: Any) -> str:
    return "unknown" if value is None else str(value)
