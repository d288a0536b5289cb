"""Helpers of the browser tests: reading what the dashboard page holds, clicking its plots.
(The ``browser`` and ``page`` fixtures are in this folder's conftest.)"""

from __future__ import annotations

import time
from typing import Any

# JavaScript run in the page: the data the embedding view's points are drawn from.
_POINTS_JS = """() => {
  for (const doc of Bokeh.documents) {
    const source = doc.get_model_by_name('sc-embedding-points');
    if (source) return {n: source.data.x.length, x: Array.from(source.data.x),
                        y: Array.from(source.data.y)};
  }
  return {n: -1, x: [], y: []};
}"""


def points(page: Any) -> dict[str, Any]:
    """{n, x, y} of the first embedding view on the page."""
    return page.evaluate(_POINTS_JS)


def latest_step(page: Any) -> int | None:
    text = page.locator(".sc-latest-step").first.inner_text().strip()
    return int(text) if text.isdigit() else None


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# JavaScript run in the page: the columns of the Bokeh data source with the given name.
_SOURCE_JS = """(name) => {
  for (const doc of Bokeh.documents) {
    const source = doc.get_model_by_name(name);
    if (source) {
      const data = {};
      for (const [column, values] of Object.entries(source.data)) data[column] = Array.from(values);
      return data;
    }
  }
  return null;
}"""


def source_data(page: Any, name: str) -> dict[str, list] | None:
    """{column: values} of the page's Bokeh data source ``name``; None when there is none."""
    return page.evaluate(_SOURCE_JS, name)


# JavaScript run in the page: where on the page (CSS pixels) the x value ``x`` of the named
# Bokeh figure lies, at the middle of its plot frame's height.
_PLOT_POINT_JS = """([name, x]) => {
  for (const doc of Bokeh.documents) {
    const figure = doc.get_model_by_name(name);
    if (!figure) continue;
    const view = Bokeh.index.find_one(figure);
    if (!view) return null;
    const canvas = view.canvas_view.el.getBoundingClientRect();
    return {x: canvas.left + view.frame.x_scale.compute(x), y: canvas.top + view.frame.bbox.vcenter};
  }
  return null;
}"""


def click_plot(page: Any, figure_name: str, x: float) -> None:
    """Click the Bokeh figure ``figure_name`` at data x ``x`` (what a user's click there does)."""
    point = page.evaluate(_PLOT_POINT_JS, [figure_name, x])
    assert point is not None, f"no figure {figure_name} drawn on the page"
    page.mouse.click(point["x"], point["y"])
