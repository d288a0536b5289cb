"""The dashboard page: a run picker, and one or two runs side by side.

:func:`session_page` builds it for a browser session served by ``sentrycam serve``;
:class:`DashboardPage` is the same page for any server URL (Jupyter uses it through
:func:`sentrycam.frontend.show`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import Any

import panel as pn

from sentrycam.frontend.client import ApiClient
from sentrycam.frontend.run_view import RunDashboard

log = logging.getLogger(__name__)

#: How often the run list is refreshed.
RUN_LIST_MS = 2000
POLL_TICKS = 10
NONE = "(none)"


class DashboardPage:
    """Run list + the chosen run(s). ``run_id`` picks the first run shown (default: the
    newest); ``compare`` a second one shown beside it."""

    def __init__(self, client: ApiClient, run_id: str | None = None,
                 compare: str | None = None, *, webgl: bool = True) -> None:
        self.client, self.webgl = client, webgl
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sc-runs")
        self._runs_future: concurrent.futures.Future | None = None
        self.runs: list[dict[str, Any]] = []
        self.picker = pn.widgets.Select(name="run", options={}, width=320,
                                        css_classes=["sc-runs"])
        self.second = pn.widgets.Select(name="side by side with", options={NONE: NONE},
                                        value=NONE, width=320, css_classes=["sc-compare"])
        self.slots = [pn.Column(pn.Spacer(height=0), sizing_mode="stretch_width"),
                      pn.Column(pn.Spacer(height=0), sizing_mode="stretch_width", visible=False)]
        self.dashboards: list[RunDashboard | None] = [None, None]
        self._wanted = [run_id, compare]
        self.empty = pn.pane.HTML("waiting for the first run: attach capture to a model with "
                                  "<code>capture.attach(model)</code> and it appears here",
                                  css_classes=["sc-no-runs"])
        self.picker.param.watch(lambda e: self._show(0, e.new), "value")
        self.second.param.watch(lambda e: self._show(1, None if e.new == NONE else e.new),
                                "value")
        self._callback = None
        self._ticks = 0

    def panel(self) -> pn.viewable.Viewable:
        header = pn.Row(pn.pane.HTML("<h2 style='margin:0'>sentrycam</h2>"), self.picker,
                        self.second, sizing_mode="stretch_width")
        return pn.Column(header, self.empty, pn.Row(*self.slots, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")

    def start(self) -> DashboardPage:
        self._request_runs()
        self._callback = pn.state.add_periodic_callback(self._poll,
                                                        period=RUN_LIST_MS // POLL_TICKS)
        return self

    def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()
        for dashboard in self.dashboards:
            if dashboard is not None:
                dashboard.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def _request_runs(self) -> None:
        self._runs_future = self._pool.submit(self.client.runs)
        self._ticks = 0

    def _poll(self) -> None:
        """Document thread: take a finished run-list fetch; ask again every RUN_LIST_MS."""
        self._ticks += 1
        future = self._runs_future
        if future is not None and future.done():
            self._runs_future = None
            try:
                self._take_runs(future.result())
            except Exception as exc:
                log.warning("could not list runs from %s: %s", self.client.url, exc)
        if self._runs_future is None and self._ticks >= POLL_TICKS:
            self._request_runs()

    def _take_runs(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        options = {_label(run): run["run_id"] for run in runs}
        if options != self.picker.options:
            self.picker.options = options
            self.second.options = {NONE: NONE, **options}
        self.empty.visible = not runs
        ids = set(options.values())
        for slot, wanted in enumerate(self._wanted):
            if wanted in ids:
                self._wanted[slot] = None
                (self.picker if slot == 0 else self.second).value = wanted
        if self.dashboards[0] is None and runs and self._wanted[0] is None:
            self.picker.value = runs[0]["run_id"]
            if self.dashboards[0] is None:
                self._show(0, runs[0]["run_id"])

    def _show(self, slot: int, run_id: str | None) -> None:
        current = self.dashboards[slot]
        if current is not None and current.run_id == run_id:
            return
        if current is not None:
            current.close()
        self.dashboards[slot] = None
        if run_id is None:
            self.slots[slot].objects = [pn.Spacer(height=0)]
            self.slots[slot].visible = slot == 0
            return
        dashboard = RunDashboard(self.client, run_id, webgl=self.webgl).start()
        self.dashboards[slot] = dashboard
        self.slots[slot].objects = [dashboard.panel()]
        self.slots[slot].visible = True


def _label(run: dict[str, Any]) -> str:
    status = run.get("status") or "?"
    return f"{run.get('name') or run['run_id'][:8]} ({status}, {run['run_id'][:6]})"


def session_page(api_url: str, token: str | None = None) -> pn.viewable.Viewable:
    """The page of one browser session of ``sentrycam serve``. The session reads from the
    server at ``api_url`` (the server's own address, never one the browser's request named)
    with ``token``, through the same HTTP API and push websocket as any other client. URL
    parameters: ``?run=`` and ``?compare=`` pick the runs shown; ``?render=canvas`` draws the
    2D maps on a plain canvas instead of WebGL (faster on machines without a GPU)."""
    pn.extension("tabulator")  # the alerts table is added after load: its JS must come now
    arguments = pn.state.curdoc.session_context.request.arguments
    page = DashboardPage(ApiClient(api_url, token=token),
                         run_id=_argument(arguments, "run"),
                         compare=_argument(arguments, "compare"),
                         webgl=_argument(arguments, "render") != "canvas").start()
    # Bokeh runs this on the server's event loop, and closing the push subscription waits for
    # the server's close frame, which that same loop sends: closing there froze the server.
    pn.state.on_session_destroyed(lambda context: threading.Thread(
        target=page.close, name="sc-page-close", daemon=True).start())
    return page.panel()


def _argument(arguments: dict[str, list[bytes]], name: str) -> str | None:
    values = arguments.get(name) or []
    return values[-1].decode() if values else None
