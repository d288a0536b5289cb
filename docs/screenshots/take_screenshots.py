"""Screenshots of the dashboard's views, taken in headless Chromium while the demo CNN trains.

    python docs/screenshots/take_screenshots.py

Starts a server in this process, trains the demo CNN on digits with capture attached (two runs,
for the side-by-side view), waits for the server's projector worker to map every snapshot, and
saves PNGs next to this file. With the worker switched off (``SENTRYCAM_PROJECTOR=off``), 2D maps
come from the tests' stand-in (a PCA of each snapshot) instead.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sentrycam import capture  # noqa: E402
from sentrycam.backend.settings import ServerSettings  # noqa: E402
from sentrycam.capture import demo  # noqa: E402
from sentrycam.backend.testing import StandInProjector, serve_in_thread  # noqa: E402
from sentrycam.frontend.testing import launch_chromium  # noqa: E402
from tests.e2e.browser import wait_until  # noqa: E402

OUT = Path(__file__).resolve().parent
# True when every embedding view on the page has drawn its points.
ALL_DRAWN_JS = """(count) => { let drawn = 0;
  for (const d of Bokeh.documents) for (const m of d.all_models)
    if (m.name === 'sc-embedding-points' && m.data.x.length > 0) drawn++;
  return drawn >= count; }"""
VIEWS = {"embedding": ".sc-embedding", "heatmaps": ".sc-heatmap", "curves": ".sc-curves",
         "alerts": ".sc-alerts", "cluster_health": ".sc-health"}


def train_in_background(url: str, steps: int, seed: int, name: str) -> threading.Thread:
    attach = functools.partial(capture.attach, url=url, every=40, probe_size=1000,
                               run_name=name)
    thread = threading.Thread(target=demo.train, args=(steps,),
                              kwargs={"attach": attach, "seed": seed}, daemon=True)
    thread.start()
    return thread


def settle(page, views: int) -> None:
    """Wait until ``views`` run dashboards show a step and their points, then a little more
    for the last patches to paint."""
    steps = page.locator(".sc-latest-step")
    wait_until(lambda: steps.count() >= views and all(
        steps.nth(i).inner_text().strip().isdigit() for i in range(views)), 120, "steps")
    wait_until(lambda: page.evaluate(ALL_DRAWN_JS, views), 120, "points")
    time.sleep(3)


def wait_for_maps(server) -> None:
    """Let the projector worker (when the server has one) map every snapshot taken so far."""
    worker = getattr(server.app.state, "projection", None)
    if worker is not None and not worker.wait_idle(600):
        raise RuntimeError("the projector did not catch up within 600 s")


def main() -> None:
    from playwright.sync_api import sync_playwright

    db = Path(tempfile.mkdtemp(prefix="sc-shots-")) / "demo.duckdb"
    with serve_in_thread(ServerSettings(db_path=db, port=0)) as server, \
            StandInProjector(server.app), sync_playwright() as playwright:
        first = train_in_background(server.url, 600, 0, "demo-cnn-lr2e-3")
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        first.join()
        wait_for_maps(server)
        page.goto(server.url)
        settle(page, 1)
        page.screenshot(path=OUT / "dashboard.png", full_page=True)
        for name, selector in VIEWS.items():
            page.locator(selector).first.screenshot(path=OUT / f"{name}.png")
        runs = server.store.run_summaries()
        second = train_in_background(server.url, 300, 1, "demo-cnn-seed1")
        second.join()
        wait_for_maps(server)
        page.goto(f"{server.url}/?run={runs[0]['run_id']}&compare="
                  f"{server.store.run_summaries()[0]['run_id']}")
        settle(page, 2)
        page.screenshot(path=OUT / "side_by_side.png")
        browser.close()
    print(f"screenshots in {OUT}")


if __name__ == "__main__":
    main()
