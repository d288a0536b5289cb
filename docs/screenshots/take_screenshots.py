"""Screenshots of the dashboard's views, taken in headless Chromium while the demo CNN trains.

    python docs/screenshots/take_screenshots.py

Starts a server in this process, trains the demo CNN on digits with capture attached (two runs,
for the side-by-side view; the second with a learning rate high enough for the audit engine to
raise alerts), a 30-layer MLP (for heatmaps with many rows) and a scenario run with an
injected learning-rate spike (for an incident with its diagnosis), waits for the server's
projector worker to map every snapshot, and saves PNGs next to this file. With the worker
switched off (``SENTRYCAM_PROJECTOR=off``), 2D maps come from the tests' stand-in (a PCA of
each snapshot) instead.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sentrycam import capture  # noqa: E402
from sentrycam.backend.settings import ServerSettings  # noqa: E402
from sentrycam.capture import demo  # noqa: E402
from sentrycam.backend.testing import StandInProjector, serve_in_thread  # noqa: E402
from sentrycam.frontend.testing import launch_chromium  # noqa: E402
from tests.e2e.browser import wait_until  # noqa: E402
from tests.e2e.readability import train_many_layers  # noqa: E402
from scenarios import train_run  # noqa: E402

OUT = Path(__file__).resolve().parent
# True when every embedding view on the page has drawn its points.
ALL_DRAWN_JS = """(count) => { let drawn = 0;
  for (const d of Bokeh.documents) for (const m of d.all_models)
    if (m.name === 'sc-embedding-points' && m.data.x.length > 0) drawn++;
  return drawn >= count; }"""
#: Views of the first run: file name -> CSS class of the view.
VIEWS = {"embedding": ".sc-embedding", "curves": ".sc-curves", "cluster_health": ".sc-health"}
#: Seconds a page may take to replay a run (a 30-layer run's catch-up on a loaded machine).
SETTLE_S = 400
#: Learning rate of the second run: high enough that its loss and gradients raise alerts.
HIGH_LR = 3e-2
#: The incident run: the scenario, seed, length and injection step of the browser test of
#: incidents (tests/e2e/test_browser_incidents.py).
INCIDENT_RUN = {"arch": "mlp", "kind": "lr_spike", "seed": 5, "steps": 360, "at": 180}


def train_in_background(url: str, steps: int, seed: int, name: str,
                        lr: float = 2e-3) -> threading.Thread:
    attach = functools.partial(capture.attach, url=url, every=40, probe_size=1000,
                               run_name=name)
    thread = threading.Thread(target=demo.train, args=(steps,),
                              kwargs={"attach": attach, "seed": seed, "lr": lr}, daemon=True)
    thread.start()
    return thread


def colour_by(page, mode: str) -> None:
    """Pick ``mode`` in the first map's "colour by" menu."""
    page.locator(".sc-embedding select").nth(1).select_option(mode)
    time.sleep(2)


def settle(page, views: int) -> None:
    """Wait until ``views`` run dashboards show a step and their points, then a little more
    for the last patches to paint."""
    # all read at once: a status line re-rendered between two reads is not waited for
    steps = page.locator(".sc-latest-step")
    wait_until(lambda: sum(text.strip().isdigit() for text in steps.all_inner_texts()) >= views,
               SETTLE_S, "steps")
    wait_until(lambda: page.evaluate(ALL_DRAWN_JS, views), SETTLE_S, "points")
    time.sleep(3)


def wait_for_maps(server) -> None:
    """Let the projector worker (when the server has one) map every snapshot taken so far,
    and the audit engine judge everything stored."""
    worker = getattr(server.app.state, "projection", None)
    if worker is not None and not worker.wait_idle(600):
        raise RuntimeError("the projector did not catch up within 600 s")
    audit = getattr(server.app.state, "audit", None)
    if audit is not None:
        audit.wait_idle(60)


def shoot(page, server, **runs: str) -> None:
    """Open the page of ``runs`` (``run=`` and maybe ``compare=``) and let it settle."""
    query = "&".join(f"{key}={value}" for key, value in runs.items())
    page.goto(f"{server.url}/?{query}")
    settle(page, len(runs))


def main() -> None:
    from playwright.sync_api import sync_playwright

    db = Path(tempfile.mkdtemp(prefix="sc-shots-")) / "demo.duckdb"
    with serve_in_thread(ServerSettings(db_path=db, port=0)) as server, \
            StandInProjector(server.app), sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        train_in_background(server.url, 600, 0, "demo-cnn-lr2e-3").join()
        first = server.store.run_summaries()[0]["run_id"]
        train_in_background(server.url, 300, 1, "demo-cnn-lr3e-2", lr=HIGH_LR).join()
        second = server.store.run_summaries()[0]["run_id"]
        deep = train_many_layers(server.url, 60, every=5).run_id
        spiked = train_run(server.url, **INCIDENT_RUN)["run_id"]
        wait_for_maps(server)

        shoot(page, server, run=first)
        page.screenshot(path=OUT / "dashboard.png", full_page=True)
        for name, selector in VIEWS.items():
            page.locator(selector).first.screenshot(path=OUT / f"{name}.png")
        colour_by(page, "loss")
        page.locator(".sc-embedding").first.screenshot(path=OUT / "embedding_loss.png")

        shoot(page, server, run=max((first, second), key=lambda run: len(
            httpx.get(f"{server.url}/api/runs/{run}/alerts", timeout=10).json())))
        page.locator(".sc-alerts").first.screenshot(path=OUT / "alerts.png")
        shoot(page, server, run=deep)
        page.locator(".sc-heatmap").first.screenshot(path=OUT / "heatmaps.png")
        shoot(page, server, run=spiked)
        incidents = page.locator(".sc-incidents").first
        incidents.locator(".tabulator-cell", has_text="►").first.click()  # its alerts
        time.sleep(2)
        incidents.screenshot(path=OUT / "incidents.png")
        page.locator(".sc-curves").first.screenshot(path=OUT / "incident_curves.png")
        shoot(page, server, run=first, compare=second)
        page.screenshot(path=OUT / "side_by_side.png")
        browser.close()
    print(f"screenshots in {OUT}")


if __name__ == "__main__":
    main()
