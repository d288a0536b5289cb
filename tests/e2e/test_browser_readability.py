"""The dashboard of a 30-layer model is readable in a real headless Chromium: the map has a
legend (classes) or a colour bar (values), every heatmap a colour bar, heatmap row labels do not
overlap (boxes measured in the page: see tests/e2e/readability.py), the alerts table fits the
page's width with every column, and loading the page logs no Bokeh warning (neither BokehJS in
the browser's console nor Bokeh's Python logger in the server)."""

from __future__ import annotations

import logging

import pytest

from sentrycam.backend.feed import Change
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.testing import StandInProjector, isolate_environment, serve_in_thread
from sentrycam.protocol.changes import ChangeKind
from tests.e2e.browser import points, source_data, wait_until
from tests.e2e.readability import DEPTH, guides, label_boxes, overlaps, train_many_layers

pytestmark = pytest.mark.browser
STEPS = 40
ALERTS = 12
#: How BokehJS starts each line it logs (``[bokeh 3.9.2] could not set initial ranges``).
BOKEHJS_PREFIX = "[bokeh"
# JavaScript run in the page: the end of the x range the named figure's view draws.
_X_END_JS = """(name) => {
  for (const doc of Bokeh.documents) {
    const figure = doc.get_model_by_name(name);
    if (figure) return Bokeh.index.find_one(figure).frame.x_range.end;
  }
  return null;
}"""


@pytest.fixture
def server(tmp_path, monkeypatch):
    isolate_environment(monkeypatch)
    settings = ServerSettings(db_path=tmp_path / "layers.duckdb", port=0, projector=False,
                              audit=False)
    with serve_in_thread(settings) as running, StandInProjector(running.app):
        yield running


def _raise_alerts(server, run_id: str, count: int) -> None:
    """``count`` alerts in the audit engine's format, stored and announced as it does."""
    for i in range(count):
        server.store.upsert_alert(run_id, {
            "step": 5 * (i % 8), "detector": f"detector_{i % 5}", "severity": 1 + i % 3,
            "layer": None, "message": f"gradient norm of layer {i} rose far above its baseline",
            "suggestion": "Hypothesis (confidence 0.60): the learning rate is too high for "
                          "this layer; lower it or clip gradients",
            "evidence": {"steps": [0, 5, 10, 15, 20], "values": [1.0, 1.1, 0.9, 2.5, 4.0],
                         "series": "log grad_norm", "baseline": 1.0, "scale": 0.1}})
    server.app.state.feed.publish([Change(run_id, ChangeKind.ALERT)])


def test_a_thirty_layer_dashboard_has_legends_colour_bars_and_labels_that_do_not_overlap(
        server, page, caplog):
    caplog.set_level(logging.WARNING, logger="bokeh")
    console = []
    page.on("console", lambda m: console.append((m.type, m.text)))
    run = train_many_layers(server.url, STEPS)
    _raise_alerts(server, run.run_id, ALERTS)
    page.goto(f"{server.url}/?run={run.run_id}")
    rows = lambda: set((source_data(page, "sc-heatmap-grad_norm") or {}).get("layer", []))
    wait_until(lambda: len(rows()) >= DEPTH, 120, f"{DEPTH} heatmap rows")
    wait_until(lambda: points(page)["n"] > 0, 120, "the map's points")
    wait_until(lambda: page.locator(".sc-alerts .tabulator-row").count() > 0, 60, "alert rows")
    page.wait_for_timeout(1500)  # the last layout passes

    drawn = guides(page)
    legend = drawn["sc-embedding-legend"]
    assert legend["visible"] and legend["height"] > 100, legend  # 10 digit classes listed
    assert len(source_data(page, "sc-embedding-key")["name"]) == 10
    heatmap_bars = {n: g for n, g in drawn.items() if n.startswith("sc-heatmap-colour-bar-")}
    assert len(heatmap_bars) == 5
    assert all(g["visible"] and g["width"] > 0 and g["height"] > 0 for g in heatmap_bars.values())

    steps = source_data(page, "sc-heatmap-grad_norm")["step"]
    assert max(steps) >= STEPS - 5  # every step's column, drawn across the plot's width:
    assert page.evaluate(_X_END_JS, "sc-heatmap-figure-grad_norm") >= max(steps)

    boxes = label_boxes(page, "sc-heatmap-figure-")
    assert len(boxes) == 5
    assert len(boxes["sc-heatmap-figure-grad_norm"]) >= DEPTH  # a row per Linear layer
    for name, labels in boxes.items():
        assert not overlaps(labels), (name, overlaps(labels)[:3])
        assert all(b["top"] >= b["frame_top"] - 1 and b["bottom"] <= b["frame_bottom"] + 1
                   for b in labels), name  # every label inside its plot

    page.locator(".sc-embedding select").nth(1).select_option("loss")
    wait_until(lambda: guides(page)["sc-embedding-colour-bar"]["visible"], 20, "loss colours")
    assert not guides(page)["sc-embedding-legend"]["visible"]

    table = page.locator(".sc-alerts .tabulator-tableholder").first
    assert table.evaluate("e => e.scrollWidth <= e.clientWidth + 1")  # no sideways scrolling
    header = page.locator(".sc-alerts .tabulator-header").first.inner_text().lower()
    for column in ("message", "severity", "suggestion", "evidence"):
        assert column in header
    assert page.locator(".sc-alerts svg.sc-evidence-plot").count() > 0
    assert "log grad_norm" in page.locator(".sc-alerts .tabulator-row").first.inner_text()
    # A plot enters the page with its first data (frontend/plot_pane.py): the page logged 9
    # range and 2 log-axis warnings per load before, from views of plots that had none yet.
    bokehjs = [text for kind, text in console
               if kind in ("warning", "error") and text.startswith(BOKEHJS_PREFIX)]
    assert not bokehjs, bokehjs
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("bokeh")]
