"""Helpers of the browser tests: the system's Chromium driven by Playwright, and reading what
the dashboard page holds.

Chromium comes from the OS (``apt-get install chromium``; CI installs it in .ci/run), never from
``playwright install``. Without it the browser tests skip on a developer machine, and FAIL when
the ``CI`` environment variable is set, so CI can never pass them by skipping.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import pytest

from sentrycam.frontend.testing import chromium_path, launch_chromium

PAGE_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        message = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser tests")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1200})
    opened = context.new_page()
    opened.set_default_timeout(PAGE_TIMEOUT_MS)
    yield opened
    context.close()


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
