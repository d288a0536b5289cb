"""One run's live dashboard: its views, fed by the push subscription and REST fetches.

Threads: the subscription thread and the fetch workers only append to ``inbox`` (push frames,
and updates fetched over REST); a periodic callback on the document's thread (``DRAIN_MS``)
applies what arrived to the views, which stream into their existing plots. Nothing blocking
ever runs on the document's thread, so a dashboard served by the same process as the API
cannot stall it. Each push frame type has its handler in :data:`FRAME_HANDLERS`, or is listed
in :data:`IGNORED_FRAMES`.

Incidents are not pushed: the server derives them from the run's alerts on each request, so
they can change only when the alerts do. Each ``alerts`` frame asks the incidents route again
(on a fetch worker); an answer older than one already applied is dropped.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import time
from typing import Any, Callable, Union

import numpy as np
import panel as pn

from sentrycam.frontend.client import ApiClient
from sentrycam.frontend.embedding_view import EmbeddingView
from sentrycam.frontend.incident_view import IncidentsView
from sentrycam.frontend.signal_views import CurvesView, HeatmapView
from sentrycam.frontend.state_views import FIXED_SCHEDULE, AlertsView, HealthView, StatusView
from sentrycam.protocol import push
from sentrycam.protocol.push import PushFrame, PushType

log = logging.getLogger(__name__)

#: How often queued updates are applied to the plots.
DRAIN_MS = 100
#: At most this many frames are applied per drain, so one drain never holds the page long.
DRAIN_MAX = 200
#: Seconds between two requests for the server's health and its projector worker's state
#: (server-wide, not pushed).
PROJECTOR_POLL_S = 2.0

#: What the inbox holds: a push frame, or an update prepared by a fetch worker.
Update = Union[PushFrame, Callable[[], None]]


class RunDashboard:
    """Every view of one run. :meth:`panel` lays them out; :meth:`close` stops the feed."""

    def __init__(self, client: ApiClient, run_id: str, *, webgl: bool = True) -> None:
        self.client, self.run_id = client, run_id
        self.inbox: collections.deque[Update] = collections.deque()
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="sc-fetch")
        self.embedding = EmbeddingView(self._fetch_map, self._fetch_trails, webgl=webgl)
        self.heatmaps = HeatmapView(self.embedding.show_step)
        self.curves = CurvesView()
        self.alerts = AlertsView(self._acknowledge)
        self.incidents = IncidentsView()
        self._incident_requests = self._incidents_applied = 0
        self.health = HealthView(self.embedding.show_step)
        self.status = StatusView()
        self.snapshot_steps: set[int] = set()
        self.applied = 0
        self.hub_dropped = 0
        self.last_applied_at: float | None = None
        self.embedding.layer.param.watch(lambda e: self._layer_changed(), "value")
        self._callback = None
        self._closed = False
        self.subscription = client.subscribe(run_id, self.inbox.append)
        self._projector_polled = time.monotonic()
        self._pool.submit(self._fetch_server_state)

    def start(self) -> RunDashboard:
        """Start applying updates (call where a document or notebook comm is current)."""
        self._callback = pn.state.add_periodic_callback(self.drain, period=DRAIN_MS)
        return self

    def close(self) -> None:
        self._closed = True
        if self._callback is not None:
            self._callback.stop()
        self.subscription.close(timeout=1.0)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def panel(self) -> pn.viewable.Viewable:
        left = pn.Column(self.embedding.panel(), self.health.panel(),
                         sizing_mode="stretch_width")
        right = pn.Column(self.curves.panel(), sizing_mode="stretch_width")
        return pn.Column(self.status.panel(), pn.Row(left, right, sizing_mode="stretch_width"),
                         pn.pane.Markdown("#### signals per layer"), self.heatmaps.panel(),
                         pn.pane.Markdown("#### incidents"), self.incidents.panel(),
                         pn.pane.Markdown("#### alerts"), self.alerts.panel(),
                         sizing_mode="stretch_width", css_classes=["sc-run"])

    # ------------------------------------------------------------------ document thread
    def drain(self) -> None:
        """Apply up to ``DRAIN_MAX`` queued frames to the views (and now and then ask for the
        server's health and projector state, which are server-wide and not pushed)."""
        now = time.monotonic()
        if now - self._projector_polled >= PROJECTOR_POLL_S:
            self._projector_polled = now
            self._submit_plain(self._fetch_server_state)
        for _ in range(min(len(self.inbox), DRAIN_MAX)):
            update = self.inbox.popleft()
            try:
                if isinstance(update, PushFrame):
                    self.apply(update)
                else:
                    update()
            except Exception:  # one bad frame must not freeze the page
                log.exception("dashboard could not apply %s", _describe(update))
            self.applied += 1
            self.last_applied_at = time.time()

    def apply(self, frame: PushFrame) -> None:
        handler = FRAME_HANDLERS.get(frame.header.type)
        if handler is not None:
            handler(self, frame.header, frame.arrays)

    # ------------------------------------------------------------------ frame handlers
    def _on_run(self, header: push.RunHeader, arrays: dict) -> None:
        s = header.summary
        self.status.update(name=s.get("name"), status=s.get("status"),
                           latest_step=s.get("last_step"), dropped=s.get("dropped"),
                           overhead=s.get("capture_overhead"))
        config = s.get("config") or {}
        if "overhead_budget" in config:
            budget = config["overhead_budget"]
            self.status.update(budget=FIXED_SCHEDULE if budget is None else budget)

    def _on_probe(self, header: push.ProbeHeader, arrays: dict) -> None:
        self.embedding.set_labels(arrays["sample_id"], arrays["label"])

    def _on_scalars(self, header: push.ScalarsHeader, arrays: dict) -> None:
        self.curves.take(header, arrays)
        self._saw_steps(arrays["step"])

    def _on_layer_stats(self, header: push.LayerStatsHeader, arrays: dict) -> None:
        self.heatmaps.take(header, arrays)
        self._saw_steps(arrays["step"])

    def _on_snapshots(self, header: push.SnapshotsHeader, arrays: dict) -> None:
        self.snapshot_steps.update(header.steps)
        self.status.update(snapshots=len(self.snapshot_steps))
        self.embedding.set_snapshots(len(self.snapshot_steps))
        if header.steps:
            self.status.update(latest_step=max(header.steps))

    def _on_embedding_index(self, header: push.EmbeddingIndexHeader, arrays: dict) -> None:
        self.embedding.add_index(header.entries)
        self._count_maps()

    def _on_embedding(self, header: push.EmbeddingHeader, arrays: dict) -> None:
        self.embedding.take_map(header, arrays)
        health = header.health
        self.health.take(header.layer, [header.step], [health.intra], [health.inter],
                         [health.spread], health.classes)
        self._count_maps()

    def _on_health(self, header: push.HealthHeader, arrays: dict) -> None:
        self.health.take(header.layer, arrays["step"], arrays["intra"], arrays["inter"],
                         arrays["spread"], header.classes)

    def _on_quality(self, header: push.QualityHeader, arrays: dict) -> None:
        self.embedding.take_quality(header.rows)

    def _on_alerts(self, header: push.AlertsHeader, arrays: dict) -> None:
        self.alerts.set_alerts(header.alerts)
        self.curves.set_alerts(header.alerts)
        self.embedding.timeline.set_alerts(header.alerts)
        self.incidents.set_alerts(header.alerts)
        self._refresh_incidents(bool(header.alerts))

    def _take_incidents(self, request: int, incidents: list[dict[str, Any]]) -> None:
        """The incidents route's answer to request number ``request`` (older ones dropped)."""
        if request < self._incidents_applied:
            return
        self._incidents_applied = request
        self.incidents.set_incidents(incidents)
        self.curves.set_incidents(incidents)
        self.embedding.timeline.set_incidents(incidents)

    def _on_status(self, header: Any, arrays: dict) -> None:
        """``header``: a :data:`~sentrycam.protocol.push.StatusHeader`."""
        self.status.update(dropped=header.dropped, overhead=header.overhead,
                           latest_step=header.step)

    def _on_projector(self, header: push.ProjectorHeader, arrays: dict) -> None:
        self.status.update(projector=header.state)

    def _on_dropped(self, header: push.DroppedHeader, arrays: dict) -> None:
        """This page read too slowly and the hub dropped frames: count them, and subscribe
        afresh, whose catch-up fills the holes (views skip what they already hold)."""
        self.hub_dropped += header.count
        self.status.update(hub_dropped=self.hub_dropped)
        self.subscription.resync()

    def _saw_steps(self, steps: np.ndarray) -> None:
        if len(steps):
            self.status.update(latest_step=int(np.max(steps)))

    def _count_maps(self) -> None:
        layer = self.embedding.layer.value
        self.status.update(maps=len(self.embedding.steps.get(layer, [])))

    def _layer_changed(self) -> None:
        self.health.show_layer(self.embedding.layer.value)
        self._count_maps()

    # ------------------------------------------------------------------ worker threads
    def _fetch_map(self, layer: str, step: int) -> None:
        self._submit(lambda: self.client.embedding(self.run_id, layer, step))

    def _fetch_trails(self, layer: str, sample_ids: list[int]) -> None:
        self._submit(lambda: functools.partial(
            self.embedding.take_trails, self.client.trails(self.run_id, layer, sample_ids)))

    def _refresh_incidents(self, has_alerts: bool) -> None:
        """Ask the incidents route again (a run without alerts has no incident to ask for)."""
        self._incident_requests += 1
        request = self._incident_requests
        if not has_alerts:
            self._take_incidents(request, [])
            return
        self._submit(lambda: functools.partial(
            self._take_incidents, request, self.client.incidents(self.run_id)))

    def _acknowledge(self, alert_id: int) -> None:
        self._submit(lambda: self.client.acknowledge(alert_id))

    def _submit(self, fetch: Callable[[], Update | None]) -> None:
        if not self._closed:  # widgets may still fire while a closed session is torn down
            self._pool.submit(self._background, fetch)

    def _submit_plain(self, task: Callable[[], None]) -> None:
        if not self._closed:
            self._pool.submit(task)

    def _fetch_server_state(self) -> None:
        """The server's health and its projector worker's state are server-wide and polled, not
        pushed; the projector's is applied as the ``projector`` frame the hub would send."""
        try:
            health = self.client.health()
        except Exception as exc:
            log.debug("health of the server of %s: %s", self.run_id, exc)
        else:  # None while it stores; the reason while it cannot
            failing = health.get("reason") if health.get("status") == "failing" else None
            self.inbox.append(functools.partial(self.status.update, storage_failure=failing))
        try:
            state = self.client.projector_state()
        except Exception as exc:
            log.debug("projector state of %s: %s", self.run_id, exc)
            return
        if state is not None:
            self.inbox.append(PushFrame(push.ProjectorHeader(run_id=self.run_id, state=state),
                                        {}))

    def _background(self, fetch: Callable[[], Update | None]) -> None:
        """Run ``fetch`` here; the update it returns goes through the inbox like pushed
        frames."""
        try:
            update = fetch()
        except Exception as exc:
            log.warning("dashboard fetch for run %s failed: %s", self.run_id, exc)
            return
        if update is not None:
            self.inbox.append(update)


#: The handler of each push frame type: ``handler(dashboard, header, arrays)``.
FRAME_HANDLERS: dict[PushType, Callable[[RunDashboard, Any, dict], None]] = {
    PushType.RUN: RunDashboard._on_run,
    PushType.PROBE: RunDashboard._on_probe,
    PushType.SCALARS: RunDashboard._on_scalars,
    PushType.LAYER_STATS: RunDashboard._on_layer_stats,
    PushType.SNAPSHOTS: RunDashboard._on_snapshots,
    PushType.EMBEDDING_INDEX: RunDashboard._on_embedding_index,
    PushType.EMBEDDING: RunDashboard._on_embedding,
    PushType.HEALTH: RunDashboard._on_health,
    PushType.QUALITY: RunDashboard._on_quality,
    PushType.ALERTS: RunDashboard._on_alerts,
    PushType.STATUS: RunDashboard._on_status,
    PushType.PROJECTOR: RunDashboard._on_projector,
    PushType.DROPPED: RunDashboard._on_dropped,
}
#: Frame types the dashboard does not show: the event log has no view yet, and the end of
#: the catch-up changes nothing on the page (views apply frames as they come).
IGNORED_FRAMES: frozenset[PushType] = frozenset({PushType.EVENT, PushType.CAUGHT_UP})


def _describe(update: Update) -> str:
    if isinstance(update, PushFrame):
        return f"a {update.header.type} frame"
    return f"an update ({getattr(update, 'func', update)!r})"
