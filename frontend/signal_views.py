"""Signal heatmaps (layer x step) and scalar curves, both growing by ``stream``.

Which heatmaps and curve panels exist, their titles and scales come from the signal registry
(:mod:`sentrycam.protocol.signals`). Rows already drawn are skipped, so frames that repeat the
catch-up (see the push hub) or a reconnection's second catch-up change nothing.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np
import panel as pn
from bokeh.models import (ColorBar, ColumnDataSource, FactorRange, HoverTool,
                          LinearColorMapper, LogColorMapper, Range1d)
from bokeh.palettes import Category10_10, Magma256, Viridis256
from bokeh.plotting import figure

from sentrycam.frontend.incident_view import draw_spans, span_columns, span_source
from sentrycam.frontend.plot_pane import plot_pane
from sentrycam.protocol import signals
from sentrycam.protocol.push import LayerStatsHeader, ScalarsHeader

#: Heatmaps shown: (stat, title, logarithmic colour scale), from the registry.
HEATMAPS = tuple((s.name, s.title, s.log_scale) for s in signals.heatmaps())
#: Heatmap rows are this many pixels tall, so row labels (ROW_FONT) never overlap at any
#: number of layers; the plot grows with its rows.
ROW_PX, ROW_FONT = 15, "10px"
#: Height of a heatmap without rows: title, x axis and borders.
HEATMAP_FRAME_PX = 70
MIN_HEATMAP_PX = 150


def natural_key(name: str) -> list[Any]:
    """Sort key that orders numbered modules as a model does: ``net.2`` before ``net.10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name)]


def heatmap_height(rows: int) -> int:
    """Pixel height of a heatmap of ``rows`` layers."""
    return max(MIN_HEATMAP_PX, HEATMAP_FRAME_PX + ROW_PX * rows)


class HeatmapView:
    """One layer x step heatmap per statistic of ``heatmaps`` ((stat, title, log colour scale),
    by default every heatmap signal of the registry); ``on_pick(step)`` when a cell is
    clicked."""

    def __init__(self, on_pick: Callable[[int], None],
                 heatmaps: Sequence[tuple[str, str, bool]] = HEATMAPS) -> None:
        self._on_pick = on_pick
        self.heatmaps = tuple(heatmaps)
        self._seen: dict[str, set[tuple[int, str]]] = {}
        self.sources, self.figures, self.mappers, self._rects = {}, {}, {}, {}
        self.x_range = Range1d(0, 1)
        for stat, title, log_scale in self.heatmaps:
            self._add(stat, title, log_scale)
        self.empty = pn.pane.HTML("no layer statistics yet", css_classes=["sc-heatmap-empty"])

    def _add(self, stat: str, title: str, log_scale: bool) -> None:
        source = ColumnDataSource({"step": [], "layer": [], "value": []},
                                  name=f"sc-heatmap-{stat}")
        mapper = (LogColorMapper if log_scale else LinearColorMapper)(
            palette=Magma256 if log_scale else Viridis256, low=1e-6 if log_scale else 0, high=1,
            nan_color="#eeeeee")
        fig = figure(height=MIN_HEATMAP_PX, sizing_mode="stretch_width", title=title,
                     x_range=self.x_range, y_range=FactorRange(factors=[]),
                     tools="tap,xwheel_zoom,xpan,reset", toolbar_location="right",
                     name=f"sc-heatmap-figure-{stat}", x_axis_label="step",
                     visible=False)  # until its first row
        fig.yaxis.major_label_text_font_size = ROW_FONT
        # The ticker ("auto") follows the mapper: logarithmic ticks for a log colour scale.
        fig.add_layout(ColorBar(color_mapper=mapper, name=f"sc-heatmap-colour-bar-{stat}",
                                width=10), "right")
        rects = fig.rect("step", "layer", width=1, height=0.95, source=source, line_color=None,
                         fill_color={"field": "value", "transform": mapper})
        fig.add_tools(HoverTool(tooltips=[("layer", "@layer"), ("step", "@step"),
                                          ("value", "@value{0.0000}")]))
        source.selected.on_change("indices", lambda attr, old, new, s=source: self._picked(s, new))
        self.sources[stat], self.figures[stat], self.mappers[stat] = source, fig, mapper
        self._rects[stat] = rects
        self._seen[stat] = set()

    def panel(self) -> pn.viewable.Viewable:
        # In the page from the start (not plot_pane): their ranges are explicit, so an empty one
        # logs nothing, and their shared x range stopped following the data when the figures
        # entered the page one by one.
        return pn.Column(self.empty,
                         *[pn.pane.Bokeh(self.figures[s]) for s, _, _ in self.heatmaps],
                         css_classes=["sc-heatmap"], sizing_mode="stretch_width")

    def take(self, header: LayerStatsHeader, arrays: dict[str, np.ndarray]) -> None:
        """Add the rows of a ``layer_stats`` frame."""
        layers, stats = header.layers, header.stats
        for code, stat in enumerate(stats):
            if stat not in self.sources:
                continue
            rows = arrays["stat"] == code
            self._stream(stat, arrays["step"][rows], [layers[i] for i in arrays["layer"][rows]],
                         arrays["value"][rows])

    def _stream(self, stat: str, steps: np.ndarray, layers: list[str], values: np.ndarray) -> None:
        seen = self._seen[stat]
        new = [(int(s), layer, float(v)) for s, layer, v in zip(steps, layers, values)
               if (int(s), layer) not in seen]
        if not new:
            return
        seen.update((s, layer) for s, layer, _ in new)
        step, layer, value = (list(column) for column in zip(*new))
        self.sources[stat].stream({"step": step, "layer": layer, "value": value})
        fig, all_steps = self.figures[stat], sorted({s for s, _ in seen})
        # the model's first layer at the top (a categorical axis lists its factors upwards)
        factors = sorted({layer for _, layer in seen}, key=natural_key, reverse=True)
        if list(fig.y_range.factors) != factors:
            fig.y_range.factors = factors
            fig.height = heatmap_height(len(factors))
            fig.visible = True
        gaps = np.diff(all_steps)
        self._rects[stat].glyph.width = float(np.median(gaps)) if len(gaps) else 1.0
        self._rescale(stat)
        self.x_range.update(start=min(self.x_range.start, all_steps[0] - 0.5) if seen else 0,
                            end=max(self.x_range.end, all_steps[-1] + 0.5))
        self.empty.visible = False

    def _rescale(self, stat: str) -> None:
        values = np.asarray(self.sources[stat].data["value"], dtype=np.float64)
        mapper = self.mappers[stat]
        finite = values[np.isfinite(values)]
        if isinstance(mapper, LogColorMapper):
            finite = finite[finite > 0]
        if len(finite):
            low, high = float(np.percentile(finite, 1)), float(np.percentile(finite, 99))
            mapper.update(low=low, high=high if high > low else low * 1.01 + 1e-12)

    def _picked(self, source: ColumnDataSource, indices: list[int]) -> None:
        if indices:
            self._on_pick(int(source.data["step"][indices[0]]))


#: Curve panels: (title, logarithmic y axis), from the registry; a scalar goes in the panel
#: :func:`sentrycam.protocol.signals.curve_of` names.
CURVES = signals.curve_panels()


class CurvesView:
    """Line plots of scalars, one line per name, with a vertical marker at each alert and a
    span over each incident."""

    def __init__(self) -> None:
        self.alert_source = ColumnDataSource({"step": [], "severity": []},
                                             name="sc-curve-alerts")
        self.incident_source = span_source("sc-curve-incidents")
        self.figures, self.sources = {}, {}
        self._last: dict[str, int] = {}
        for title, log_scale in CURVES:
            fig = figure(height=190, sizing_mode="stretch_width", title=title,
                         y_axis_type="log" if log_scale else "linear",
                         tools="xwheel_zoom,xpan,box_zoom,reset", x_axis_label="step",
                         visible=False)  # until its first line
            draw_spans(fig, self.incident_source)
            fig.vspan(x="step", source=self.alert_source, line_color="#d62728", line_alpha=0.6,
                      line_width=1.5, line_dash="dashed")
            self.figures[title] = fig

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(*[plot_pane(f) for f in self.figures.values()],
                         css_classes=["sc-curves"], sizing_mode="stretch_width")

    def take(self, header: ScalarsHeader, arrays: dict[str, np.ndarray]) -> None:
        """Add the rows of a ``scalars`` frame (rows at or before a line's last step are
        already drawn)."""
        names = header.names
        for code, name in enumerate(names):
            rows = arrays["name"] == code
            steps, values = arrays["step"][rows], arrays["value"][rows]
            keep = steps > self._last.get(name, -1)
            if keep.any():
                self._line(name).stream({"step": steps[keep].tolist(),
                                         "value": np.where(np.isfinite(values[keep]),
                                                           values[keep], np.nan).tolist()})
                self._last[name] = int(steps[keep].max())
                title = signals.curve_of(name)
                if title is not None:
                    self.figures[title].visible = True  # after its data: see frontend doc

    def _line(self, name: str) -> ColumnDataSource:
        if name not in self.sources:
            source = ColumnDataSource({"step": [], "value": []}, name=f"sc-curve-{name}")
            self.sources[name] = source
            title = signals.curve_of(name)
            if title is not None:
                fig = self.figures[title]
                colour = Category10_10[(len(fig.renderers) - 1) % 10]
                fig.line("step", "value", source=source, legend_label=name, line_color=colour,
                         line_width=1.5)
                fig.legend.location = "top_right"
                fig.legend.click_policy = "hide"
        return self.sources[name]

    def set_alerts(self, alerts: list[dict[str, Any]]) -> None:
        self.alert_source.data = {"step": [a["step"] for a in alerts],
                                  "severity": [a["severity"] for a in alerts]}

    def set_incidents(self, incidents: list[dict[str, Any]]) -> None:
        """Every incident of the run (as the incidents route lists them)."""
        self.incident_source.data = span_columns(incidents)
