"""Embedding view: every probe sample at one snapshot, on the projector's 2D map.

WebGL scatter coloured by label, prediction, correctness, loss or confidence; hover shows
sample id, label and prediction; selecting points draws their trails across snapshots; a
player (slider with play/pause) replays snapshots; a layer picker; a "live" toggle that
follows the newest map; the projection quality numbers of the shown map; under the player, a
timeline of the layer's stored maps and alerts (:mod:`.timeline_view`).

The view never fetches by itself: it asks its owner (``request_map``/``request_trails``),
which fetches on a worker thread and hands results back through :meth:`take_map` and
:meth:`take_trails` on the document's thread.
"""

from __future__ import annotations

import collections
from typing import Any, Callable

import numpy as np
import panel as pn
from bokeh.models import (ColorBar, ColumnDataSource, HoverTool, Legend, LegendItem,
                          LinearColorMapper)
from bokeh.palettes import Category10_10, Category20_20, Viridis256
from bokeh.plotting import figure

from sentrycam.frontend.plot_pane import plot_pane
from sentrycam.frontend.quality_text import quality_html
from sentrycam.frontend.state_views import plural
from sentrycam.frontend.timeline_view import EmbeddingTimeline
from sentrycam.protocol.push import EmbeddingHeader

#: 2D maps kept in memory per dashboard (the newest per layer are always kept too).
MAP_CACHE = 24
COLOUR_BY = ("label", "prediction", "correctness", "loss", "confidence")
MAX_TRAILS = 200
#: Up to this many classes the map has a legend (one colour per class); beyond, a colour bar.
LEGEND_CLASSES = 20
#: Correctness colours: (value, colour, legend entry).
CORRECTNESS = ((0, "#d62728", "wrong"), (1, "#2ca02c", "right"))
#: What the layer picker says about which layers have maps.
MAPPED_LAYERS_HINT = ("Only the deepest layers of each snapshot get a 2D map (the server's "
                      "SENTRYCAM_PROJECTOR_MAX_LAYERS, 2 by default; 0 maps every layer).")
WAITING_FOR_MAP = "waiting for the first map"


class EmbeddingView:
    """One run's embedding view. ``request_map(layer, step)`` and
    ``request_trails(layer, sample_ids)`` are called when data must be fetched. ``webgl``:
    draw the points with WebGL (default) or on a plain canvas."""

    def __init__(self, request_map: Callable[[str, int], None],
                 request_trails: Callable[[str, list[int]], None], *,
                 webgl: bool = True) -> None:
        self._request_map, self._request_trails = request_map, request_trails
        self.webgl = webgl
        self.steps: dict[str, list[int]] = {}        # layer -> steps with a stored map
        self.maps: collections.OrderedDict = collections.OrderedDict()  # (layer, step) -> map
        self.quality: dict[tuple[str, int], dict[str, float]] = {}
        self.labels: dict[int, int] = {}
        self.shown: tuple[str, int] | None = None
        self._pending: tuple[str, int] | None = None
        self._user_layer = False  # once the user picks a layer, new layers do not move it
        self._setting_layer = 0  # > 0 while the view itself changes the layer picker
        self.source = ColumnDataSource(_empty_points(), name="sc-embedding-points")
        self.trail_source = ColumnDataSource({"xs": [], "ys": []}, name="sc-embedding-trails")
        self.mapper = LinearColorMapper(palette=Category10_10, low=-0.5, high=9.5,
                                        nan_color="#bbbbbb")
        # One row per legend entry (x, y NaN: never drawn): the legend groups it by "name".
        self.key_source = ColumnDataSource({"x": [], "y": [], "name": [], "colour": []},
                                           name="sc-embedding-key")
        self.colour_bar = ColorBar(color_mapper=self.mapper, name="sc-embedding-colour-bar",
                                   title="loss", visible=False, width=12)
        self.figure = self._figure()
        self.timeline = EmbeddingTimeline(self.show_step)
        self.layer = pn.widgets.Select(name="layer (mapped ones)", options=[WAITING_FOR_MAP],
                                       value=WAITING_FOR_MAP, width=190, disabled=True,
                                       description=MAPPED_LAYERS_HINT)
        self.colour = pn.widgets.Select(name="colour by", options=list(COLOUR_BY), width=110)
        self.live = pn.widgets.Toggle(name="live", value=True, button_type="success", width=70)
        self.player = pn.widgets.Player(name="snapshot", start=0, end=0, value=0, interval=700,
                                        loop_policy="once", show_loop_controls=False,
                                        visible_buttons=["previous", "play", "pause", "next"],
                                        width=330, disabled=True)
        self.caption = pn.pane.HTML(WAITING_FOR_MAP, css_classes=["sc-map-state"])
        self.quality_text = pn.pane.HTML("", css_classes=["sc-quality"])
        self.layer_note = pn.pane.HTML(WAITING_FOR_MAP, css_classes=["sc-layer-note"],
                                       styles={"font-size": "12px", "color": "#555"})
        self.layer.param.watch(lambda e: self._on_layer(e.new), "value")
        self.colour.param.watch(lambda e: self._recolour(), "value")
        self.player.param.watch(lambda e: self._on_player(e.new), "value")
        self.live.param.watch(lambda e: e.new and self._follow_newest(), "value")
        self.source.selected.on_change("indices", lambda attr, old, new: self._on_select(new))

    def _figure(self) -> Any:
        # WebGL draws 20,000 points fastest with a GPU; without one (software WebGL) BokehJS
        # spends most of each repaint copying the WebGL canvas: a plain canvas then answers
        # user actions about twice as fast (docs/benchmarks.md, dashboard latency).
        fig = figure(output_backend="webgl" if self.webgl else "canvas", height=430,
                     sizing_mode="stretch_width",
                     tools="pan,wheel_zoom,box_select,lasso_select,tap,reset",
                     active_scroll="wheel_zoom", title="probe samples (2D map)",
                     visible=False)  # until the first map: see frontend/__init__.py on ranges
        fig.multi_line("xs", "ys", source=self.trail_source, line_color="#444444",
                       line_alpha=0.6, line_width=1.5)
        points = fig.scatter("x", "y", source=self.source, size=5, line_color=None,
                             fill_color={"field": "c", "transform": self.mapper}, fill_alpha=0.8)
        fig.add_tools(HoverTool(renderers=[points], tooltips=[
            ("sample", "@sample_id"), ("label", "@label"), ("prediction", "@pred"),
            ("loss", "@loss{0.000}"), ("confidence", "@confidence{0.00}")]))
        key = fig.scatter("x", "y", source=self.key_source, size=9, line_color=None,
                          fill_color="colour")
        fig.add_layout(Legend(items=[LegendItem(label={"field": "name"}, renderers=[key])],
                              name="sc-embedding-legend", title="label",
                              label_text_font_size="11px", spacing=1, padding=4), "right")
        fig.add_layout(self.colour_bar, "right")
        fig.xaxis.visible = fig.yaxis.visible = False
        return fig

    def panel(self) -> pn.viewable.Viewable:
        # wraps when narrow (two runs side by side) instead of hiding the "live" toggle
        pickers = pn.FlexBox(self.layer, self.colour, self.live, flex_wrap="wrap")
        controls = pn.Column(pickers, self.layer_note, self.player, self.timeline.panel(),
                             sizing_mode="stretch_width")
        return pn.Column(controls, self.caption, plot_pane(self.figure), self.quality_text,
                         css_classes=["sc-embedding"], sizing_mode="stretch_width")

    # ------------------------------------------------------------------ data in
    def set_labels(self, sample_ids: np.ndarray, labels: np.ndarray) -> None:
        self.labels = dict(zip(sample_ids.tolist(), labels.tolist()))

    def add_index(self, entries: list[tuple[int, str, int]]) -> None:
        """Stored maps announced: (step, layer, number of points) each."""
        for step, layer, _n in entries:
            self._add_step(layer, int(step))
        self._refresh_controls()

    def take_map(self, header: EmbeddingHeader, arrays: dict[str, np.ndarray]) -> None:
        """A 2D map arrived (live or fetched): remember it, and draw it if it is wanted."""
        key = (header.layer, header.step)
        self.maps[key] = arrays
        self.maps.move_to_end(key)
        self._trim_cache()
        self._add_step(*key)
        self._refresh_controls()
        if self.live.value and key[0] == self.layer.value and key[1] == self.steps[key[0]][-1]:
            self._want(*key)
        elif key == self._pending:
            self._draw(key)

    def take_quality(self, rows: list[tuple[int, str, str, float]]) -> None:
        """Projection quality rows: (step, layer, metric, value) each."""
        for step, layer, metric, value in rows:
            self.quality.setdefault((layer, int(step)), {})[metric] = value
        self._show_quality()

    def take_trails(self, trails: dict[str, np.ndarray]) -> None:
        xs, ys = [], []
        ids = trails["sample_id"]
        for sample_id in np.unique(ids):
            keep = ids == sample_id
            xs.append(trails["x"][keep].tolist())
            ys.append(trails["y"][keep].tolist())
        self.trail_source.data = {"xs": xs, "ys": ys}

    def show_step(self, step: int) -> None:
        """Move to the map of the shown layer nearest ``step`` (at or before it when one
        exists) and stop following the newest one."""
        steps = self.steps.get(self.layer.value) or []
        if not steps:
            return
        earlier = [s for s in steps if s <= step]
        target = earlier[-1] if earlier else steps[0]
        self.live.value = False
        self.player.value = steps.index(target)
        self._want(self.layer.value, target)

    # ------------------------------------------------------------------ internals
    def _add_step(self, layer: str, step: int) -> None:
        steps = self.steps.setdefault(layer, [])
        if not steps or step > steps[-1]:
            steps.append(step)
        elif step not in steps:
            steps.append(step)
            steps.sort()

    def _trim_cache(self) -> None:
        newest = {(layer, steps[-1]) for layer, steps in self.steps.items() if steps}
        for key in list(self.maps):
            if len(self.maps) <= MAP_CACHE:
                break
            if key not in newest and key != self.shown:
                del self.maps[key]

    def _refresh_controls(self) -> None:
        layers = sorted(self.steps)
        if not layers:
            return  # the picker keeps saying it waits for the first map
        self._setting_layer += 1  # Select picks a value itself when its options change
        try:
            if layers != list(self.layer.options):
                self.layer.options = layers
                self.layer.disabled = False
                self.layer_note.object = (
                    f"{plural(len(layers), 'layer')} mapped: {', '.join(layers)}. "
                    + MAPPED_LAYERS_HINT)
            if self.layer.value not in layers or not self._user_layer:
                self.layer.value = _default_layer(layers)
        finally:
            self._setting_layer -= 1
        steps = self.steps.get(self.layer.value) or []
        self.timeline.show_steps(self.layer.value, steps)
        if steps:
            self.player.disabled = False
            if self.player.end != len(steps) - 1:
                self.player.end = max(len(steps) - 1, 1)
            if self.live.value and self.player.value != len(steps) - 1:
                self.player.value = len(steps) - 1

    def set_snapshots(self, count: int) -> None:
        """The run has ``count`` stored snapshots: until a map is shown, the caption says so
        (in the status line's words)."""
        if self.shown is None and self._pending is None:
            self.caption.object = (f"{plural(count, 'snapshot')} stored, {WAITING_FOR_MAP}"
                                   if count else "waiting for the first snapshot")

    def _on_layer(self, layer: str) -> None:
        self._user_layer = self._user_layer or self._setting_layer == 0
        self.trail_source.data = {"xs": [], "ys": []}
        self._refresh_controls()
        steps = self.steps.get(layer) or []
        if steps:
            self._want(layer, steps[min(self.player.value, len(steps) - 1)])

    def _on_player(self, index: int) -> None:
        steps = self.steps.get(self.layer.value) or []
        if not steps:
            return
        index = min(index, len(steps) - 1)
        if index < len(steps) - 1 and self.live.value:
            self.live.value = False
        self._want(self.layer.value, steps[index])

    def _follow_newest(self) -> None:
        steps = self.steps.get(self.layer.value) or []
        if steps:
            self.player.value = len(steps) - 1
            self._want(self.layer.value, steps[-1])

    def _want(self, layer: str, step: int) -> None:
        key = (layer, step)
        if key == self.shown:
            return
        if key in self.maps:
            self._draw(key)
        else:
            self._pending = key
            self.caption.object = f"loading the map of step {step} ..."
            self._request_map(layer, step)

    def _draw(self, key: tuple[str, int]) -> None:
        arrays = self.maps[key]
        ids = arrays["sample_id"]
        labels = np.array([self.labels.get(i, -1) for i in ids.tolist()], dtype=np.int64)
        pred = arrays["pred"]
        # 32-bit columns: BokehJS takes them as typed arrays, half the bytes of 64-bit ones.
        self._columns = {
            "x": arrays["xy"][:, 0], "y": arrays["xy"][:, 1], "sample_id": ids.astype(np.int32),
            "label": labels.astype(np.int32), "pred": pred.astype(np.int32),
            "correct": np.where((pred >= 0) & (labels >= 0), (pred == labels),
                                np.nan).astype(np.float32),
            "loss": arrays["loss"], "confidence": arrays["confidence"]}
        self.shown, self._pending = key, None
        self.timeline.mark_shown(*key)
        self.source.data = {**self._columns, "c": self._colour_values()}
        self.figure.visible = True  # after its data: see frontend/__init__.py on ranges
        self.figure.title.text = f"{key[0]} at step {key[1]}  ({len(ids)} probe samples)"
        self.caption.object = (f"<span class='sc-map-step'>step {key[1]}</span>"
                               + (" (live)" if self.live.value else ""))
        self._show_quality()

    def _colour_values(self) -> np.ndarray:
        """The colour column of the shown map for the chosen mode; sets the mapper and shows
        the legend (classes, correctness) or the colour bar (values) that reads it."""
        mode, cols = self.colour.value, self._columns
        values = {"label": cols["label"], "prediction": cols["pred"],
                  "correctness": cols["correct"], "loss": cols["loss"],
                  "confidence": cols["confidence"]}[mode].astype(np.float32)
        key: list[tuple[str, str]] = []  # (legend entry, colour)
        if mode in ("label", "prediction"):
            values = np.where(values < 0, np.nan, values)
            classes = int(np.nanmax(values)) + 1 if np.isfinite(values).any() else 10
            palette = Category10_10 if classes <= 10 else (Category20_20 if classes <= 20
                                                          else Viridis256)
            self.mapper.update(palette=palette, low=-0.5, high=max(classes, 10) - 0.5)
            if not np.isfinite(values).any():
                key = [(f"no {mode}s", self.mapper.nan_color)]
            elif classes <= LEGEND_CLASSES:
                key = [(str(k), palette[k]) for k in range(classes)]
        elif mode == "correctness":
            self.mapper.update(palette=[c for _, c, _ in CORRECTNESS], low=-0.5, high=1.5)
            key = [(name, colour) for _, colour, name in CORRECTNESS]
        else:
            finite = values[np.isfinite(values)]
            high = float(np.percentile(finite, 99)) if len(finite) else 1.0
            low = 0.0 if mode == "loss" else float(finite.min()) if len(finite) else 0.0
            self.mapper.update(palette=Viridis256, low=low, high=max(high, low + 1e-6))
        self._show_key(mode, key)
        return values

    def _show_key(self, mode: str, key: list[tuple[str, str]]) -> None:
        """A legend of ``key`` (entry, colour) when there is one, else a colour bar."""
        nan = [float("nan")] * len(key)
        self.key_source.data = {"x": nan, "y": nan, "name": [name for name, _ in key],
                                "colour": [colour for _, colour in key]}
        legend = self.figure.select_one({"name": "sc-embedding-legend"})
        legend.update(visible=bool(key), title=mode)
        self.colour_bar.update(visible=not key, title=mode)

    def _recolour(self) -> None:
        if self.shown is not None:
            self.source.patch({"c": [(slice(0, len(self._columns["x"])),
                                      self._colour_values())]})

    def _show_quality(self) -> None:
        metrics = self.quality.get(self.shown) if self.shown else None
        if not metrics:
            self.quality_text.object = ("projection quality: not computed yet for this map"
                                        if self.shown else "")
            return
        self.quality_text.object = quality_html(metrics)

    def _on_select(self, indices: list[int]) -> None:
        if not indices or self.shown is None:
            self.trail_source.data = {"xs": [], "ys": []}
            return
        ids = self.source.data["sample_id"]
        chosen = [int(ids[i]) for i in indices[:MAX_TRAILS]]
        self._request_trails(self.shown[0], chosen)


def _empty_points() -> dict[str, list]:
    return {name: [] for name in ("x", "y", "sample_id", "label", "pred", "correct", "loss",
                                  "confidence", "c")}


def _default_layer(layers: list[str]) -> str:
    """The penultimate representation (the classifier's input) when it is there."""
    inputs = [layer for layer in layers if layer.endswith(":input")]
    return inputs[-1] if inputs else layers[-1]
