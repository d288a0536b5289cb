"""The embedding timeline: a thin strip under the embedding view's player.

x is the training step. A tick marks every stored 2D map of the shown layer, a band marks the
step shown now, a shaded span marks each incident (from its start to its end step, in its
severity's colour), and a triangle marks each alert of the shown layer (or of no layer: run-wide
alerts), one per step however many alerts share it (hover names them and gives their count),
coloured by the highest severity there. Clicking near a tick asks the embedding view to show
that snapshot.

All methods run on the document's thread; sources are updated in place (``stream`` when ticks
only grow at the end, else assigned), never rebuilt.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import panel as pn
from bokeh.events import Tap
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.plotting import figure

from sentrycam.frontend.incident_view import draw_spans, span_columns, span_source
from sentrycam.frontend.plot_pane import plot_pane
from sentrycam.frontend.state_views import SEVERITY_COLOUR, severity_name

#: Heights (y) of the strip's rows: ticks around 0, alert markers above them.
TICK_Y, ALERT_Y = 0.0, 1.0
#: Bokeh name of the strip (the browser tests find it by name to click on it).
FIGURE_NAME = "sc-embedding-timeline-figure"
ALERT_COLUMNS = ("step", "severity", "colour", "detector", "count", "message")


class EmbeddingTimeline:
    """Ticks, shown-step marker and alerts of one layer. ``on_pick(step)`` is called with the
    stored map step nearest a click (when the click is within one tick spacing of it)."""

    def __init__(self, on_pick: Callable[[int], None]) -> None:
        self._on_pick = on_pick
        self.layer: str | None = None
        self.alerts: list[dict[str, Any]] = []
        self.tick_source = ColumnDataSource({"step": []}, name="sc-embedding-timeline-ticks")
        self.shown_source = ColumnDataSource({"step": []}, name="sc-embedding-timeline-shown")
        self.alert_source = ColumnDataSource({c: [] for c in ALERT_COLUMNS},
                                             name="sc-embedding-timeline-alerts")
        self.incident_source = span_source("sc-embedding-timeline-incidents")
        self.figure = self._figure()

    def _figure(self) -> Any:
        fig = figure(name=FIGURE_NAME, height=110, sizing_mode="stretch_width",
                     y_range=(-0.8, 1.6), tools="xpan,xwheel_zoom,reset", toolbar_location=None,
                     x_axis_label="step", min_border_top=4, min_border_bottom=4,
                     visible=False)  # until it has a tick, an alert or an incident
        spans = draw_spans(fig, self.incident_source)
        fig.add_tools(HoverTool(renderers=[spans], tooltips=[
            ("incident", "@severity"), ("diagnosis", "@diagnosis")]))
        fig.vspan(x="step", source=self.shown_source, line_color="#1f77b4", line_width=3,
                  line_alpha=0.5)
        fig.segment(x0="step", y0=TICK_Y - 0.45, x1="step", y1=TICK_Y + 0.45,
                    source=self.tick_source, line_color="#555555", line_width=1.5)
        markers = fig.scatter("step", ALERT_Y, source=self.alert_source, marker="triangle",
                              size=11, fill_color="colour", line_color=None)
        fig.add_tools(HoverTool(renderers=[markers], tooltips=[
            ("step", "@step"), ("alerts", "@count"), ("detectors", "@detector"),
            ("highest severity", "@severity"), ("", "@message")]))
        fig.yaxis.visible = False
        fig.ygrid.visible = False
        fig.on_event(Tap, lambda event: self.pick_near(event.x))
        return fig

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(plot_pane(self.figure), css_classes=["sc-embedding-timeline"],
                         sizing_mode="stretch_width")

    # ------------------------------------------------------------------ data in
    def show_steps(self, layer: str | None, steps: Sequence[int]) -> None:
        """The shown layer and its stored map steps (sorted). New steps at the end are
        streamed; a layer change or a step filled in earlier replaces the ticks."""
        drawn = self.tick_source.data["step"]
        steps = [int(s) for s in steps]
        if layer != self.layer:
            self.layer = layer
            self.tick_source.data = {"step": steps}
            self.shown_source.data = {"step": []}  # until the new layer's map is drawn
            self._draw_alerts()
        elif list(drawn) == steps[:len(drawn)]:
            if len(steps) > len(drawn):
                self.tick_source.stream({"step": steps[len(drawn):]})
        else:
            self.tick_source.data = {"step": steps}
        self._show_if_drawn()

    def mark_shown(self, layer: str, step: int) -> None:
        """The embedding view now draws ``layer`` at ``step``."""
        if layer == self.layer and list(self.shown_source.data["step"]) != [step]:
            self.shown_source.data = {"step": [int(step)]}

    def set_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Every alert of the run (as the ``alerts`` frame lists them)."""
        self.alerts = alerts
        self._draw_alerts()

    def set_incidents(self, incidents: list[dict[str, Any]]) -> None:
        """Every incident of the run (run-wide: shown whatever the layer)."""
        self.incident_source.data = span_columns(incidents)
        self._show_if_drawn()

    def pick_near(self, x: float | None) -> None:
        """A click at step ``x``: show the nearest stored map when it is within one tick
        spacing (a click in an empty stretch of the strip does nothing)."""
        steps = np.asarray(self.tick_source.data["step"], dtype=np.float64)
        if x is None or not len(steps):
            return
        nearest = int(np.argmin(np.abs(steps - x)))
        gaps = np.diff(np.sort(steps))
        reach = float(np.median(gaps)) if len(gaps) else np.inf  # one tick fills the strip
        if abs(steps[nearest] - x) <= reach:
            self._on_pick(int(steps[nearest]))

    # ------------------------------------------------------------------ internals
    def _draw_alerts(self) -> None:
        mine = [a for a in self.alerts if not a.get("layer") or a.get("layer") == self.layer]
        by_step: dict[int, list[dict[str, Any]]] = {}
        for alert in mine:
            by_step.setdefault(int(alert["step"]), []).append(alert)
        steps = sorted(by_step)
        top = [max(by_step[s], key=lambda a: a["severity"]) for s in steps]
        self.alert_source.data = {
            "step": steps, "count": [len(by_step[s]) for s in steps],
            "severity": [severity_name(a["severity"]) for a in top],
            "colour": [SEVERITY_COLOUR.get(a["severity"], SEVERITY_COLOUR[0]) for a in top],
            "detector": [", ".join(sorted({str(a.get("detector")) for a in by_step[s]}))
                         for s in steps],
            "message": [str(a.get("message") or "") for a in top]}
        self._show_if_drawn()

    def _show_if_drawn(self) -> None:
        self.figure.visible = any(len(source.data[column]) for source, column in (
            (self.tick_source, "step"), (self.alert_source, "step"),
            (self.incident_source, "start")))
