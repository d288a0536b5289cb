"""The audit engine: runs every detector on each run's streams as the server stores them.

:class:`AuditEngine` subscribes to the server's change feed. The feed calls back on the ingest
writer's thread, so the callback only puts the changes on the engine's own queue; the engine's
thread takes them off in order and hands each to the run's :class:`RunAudit`. An error in a
detector is logged and counted, never fatal: the engine thread carries on with the next change.
Alerts are stored with ``Store.upsert_alert`` and announced as ``Change(run_id, ChangeKind.ALERT,
step, layer, message=<alert dict>)`` on the same feed (the dashboard push hub, the webhook action).

Causality: a detector only ever sees what was stored up to the observation it judges; each
observation is judged before it joins the detector's baseline.

Restarts: the engine keeps its detectors' state in memory. When it meets a run mid-way (the first
change it sees of a run has a step: the server restarted during the run, or changes were
dropped), it first replays what the store holds of that run before that step
(:meth:`RunAudit.catch_up`), so baselines and open alerts continue where they were.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from sentrycam.backend.audit.alerts import Alert, AlertBook, Finding
from sentrycam.backend.audit.detectors import Detector, MapView, ProbeView, build_detectors
from sentrycam.backend.audit.history import stored_changes
from sentrycam.backend.audit.inbox import AuditInbox
from sentrycam.backend.feed import Change, ChangeFeed
from sentrycam.backend.geometry import training_labels
from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.messages import SPLIT_HELDOUT, ProbeSet, Snapshot, per_step_scalars

log = logging.getLogger(__name__)

_STOP = object()


class RunAudit:
    """Every detector of one run, its probe labels and its open alerts."""

    def __init__(self, run_id: str, store: Any, publish: Callable[[Alert], None]) -> None:
        self.run_id, self.store = run_id, store
        self.detectors: list[Detector] = build_detectors()
        self.book = AlertBook(run_id, self._write)
        self._publish = publish
        self.labels: dict[int, tuple[int, bool]] = {}  # sample_id -> (label, heldout)
        self.errors = 0
        self.last_step: int | None = None
        self.ended = False
        # While catching up: stored alert ids by (detector, layer, first step); else None.
        self._stored_ids: dict[tuple[str, str | None, int], int] | None = None

    def catch_up(self, before_step: int) -> int:
        """Bring every detector up to date with what the store holds of this run before
        ``before_step`` (the engine meets the run mid-way: the server restarted, or the engine
        was started late), by replaying it in order. Alerts the replay raises that are already
        stored keep their row (a persisting one is then updated, not repeated); nothing is
        announced again. Returns the number of changes replayed."""
        self._stored_ids = {(a["detector"], a["layer"], int(a["step"])): int(a["alert_id"])
                            for a in self.store.alerts(self.run_id)}
        replayed = 0
        try:
            for change in stored_changes(self.store, self.run_id, before_step):
                self.handle(change)
                replayed += 1
        finally:
            self._stored_ids = None
        return replayed

    # -- inputs ---------------------------------------------------------------------------

    def handle(self, change: Change) -> None:
        if change.step is not None:
            self.last_step = max(self.last_step or 0, int(change.step))
        on_change = AUDITED.get(change.kind)
        if on_change is not None:
            on_change(self, change)

    def _on_probe(self, change: Change) -> None:
        self._probe(change.message)

    def _on_snapshot(self, change: Change) -> None:
        self._judge(ChangeKind.SNAPSHOT, self._probe_view(change.message))

    def _on_embedding(self, change: Change) -> None:
        view = self._map_view(change)
        if view is not None:
            self._judge(ChangeKind.EMBEDDING, view)

    def _on_run_end(self, change: Change) -> None:
        self.ended = True
        self._announce(self.book.flush())

    def _on_message(self, change: Change) -> None:
        """Layer statistics go to the detectors as the trainer sent them."""
        if change.message is not None:
            self._judge(change.kind, change.message)

    def _on_scalars(self, change: Change) -> None:
        """Scalars go to the detectors one step at a time, in step order (a ScalarSeries is
        many steps' Scalars in one message)."""
        if change.message is not None:
            for scalars in per_step_scalars(change.message):
                self._judge(change.kind, scalars)

    def _probe(self, message: ProbeSet | None) -> None:
        if message is None:
            return
        for sample_id, label, split in zip(message.sample_ids.tolist(), message.labels.tolist(),
                                           message.split.tolist()):
            self.labels[int(sample_id)] = (int(label), int(split) == SPLIT_HELDOUT)

    def _ensure_labels(self) -> None:
        """Labels of a run whose probe message came before this engine started (restart)."""
        if self.labels:
            return
        try:
            probe = self.store.probe(self.run_id)
        except Exception:
            log.debug("no probe stored for run %s", self.run_id, exc_info=True)
            return
        for sample_id, label, split in zip(probe["sample_id"].tolist(), probe["label"].tolist(),
                                           probe["split"].tolist()):
            self.labels[int(sample_id)] = (int(label), int(split) == SPLIT_HELDOUT)

    def _aligned(self, sample_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._ensure_labels()
        pairs = [self.labels.get(int(s), (-1, False)) for s in sample_ids.tolist()]
        labels = np.array([p[0] for p in pairs], dtype=np.int64)
        heldout = np.array([p[1] for p in pairs], dtype=bool)
        return labels, heldout

    def _probe_view(self, snapshot: Snapshot) -> ProbeView:
        labels, heldout = self._aligned(np.asarray(snapshot.sample_ids))
        return ProbeView(step=snapshot.step, epoch=snapshot.epoch,
                         sample_ids=np.asarray(snapshot.sample_ids), labels=labels,
                         heldout=heldout, outputs=dict(snapshot.outputs),
                         features=dict(snapshot.features), nonfinite=dict(snapshot.nonfinite))

    def _map_view(self, change: Change) -> MapView | None:
        if change.layer is None or change.step is None:
            return None
        sample_ids, coords = self.store.embedding(self.run_id, change.layer, int(change.step))
        labels, heldout = self._aligned(sample_ids)
        labels = training_labels(labels, heldout)  # as the dashboard's cluster health
        return MapView(step=int(change.step), layer=change.layer, coords=coords, labels=labels)

    # -- detectors and alerts ---------------------------------------------------------------

    def _judge(self, kind: ChangeKind, item: Any) -> None:
        findings: list[Finding] = []
        for detector in self.detectors:
            if kind not in detector.kinds:
                continue
            try:
                findings.extend(detector.observe(kind, item))
            except Exception:
                self.errors += 1
                log.exception("audit detector %s failed on %s of run %s", detector.name, kind,
                              self.run_id)
        if findings:
            self._announce(self.book.fold(findings))

    def _write(self, alert: Alert) -> int:
        if self._stored_ids is not None and alert.alert_id is None:
            stored = self._stored_ids.get((alert.detector, alert.layer, alert.step))
            if stored is not None:
                return stored
        return self.store.upsert_alert(self.run_id, alert.record(), alert.alert_id)

    def _announce(self, alerts: Sequence[Alert]) -> None:
        if self._stored_ids is not None:
            return  # catching up: these were announced when they happened
        for alert in alerts:
            self._publish(alert)

    def status(self) -> dict[str, Any]:
        detectors = [d.status() for d in self.detectors]
        geometry = {d.name: d.trajectory() for d in self.detectors if hasattr(d, "trajectory")}
        return {"run_id": self.run_id, "last_step": self.last_step, "ended": self.ended,
                "errors": self.errors, "alerts_raised": self.book.raised,
                "open_alerts": [a.record() | {"alert_id": a.alert_id}
                                for a in self.book.open_alerts()],
                "active": sorted(d["detector"] for d in detectors if d["active"]),
                "inactive": {d["detector"]: d["reason"] for d in detectors if not d["active"]},
                "detectors": detectors, "geometry": geometry}


#: What the audit does with each kind of change it reads (other kinds are not audited).
AUDITED: dict[ChangeKind, Callable[[RunAudit, Change], None]] = {
    ChangeKind.PROBE: RunAudit._on_probe,
    ChangeKind.SCALARS: RunAudit._on_scalars,
    ChangeKind.LAYER_STATS: RunAudit._on_message,
    ChangeKind.SNAPSHOT: RunAudit._on_snapshot,
    ChangeKind.EMBEDDING: RunAudit._on_embedding,
    ChangeKind.RUN_END: RunAudit._on_run_end,
}


def audited(changes: Sequence[Change]) -> list[Change]:
    """The changes the audit reads (kinds in :data:`AUDITED`), in order."""
    return [c for c in changes if c.kind in AUDITED]


class AuditEngine:
    """Background worker: one :class:`RunAudit` per run, fed from the change feed."""

    def __init__(self, store: Any, feed: ChangeFeed, *, queue_size: int = 100_000) -> None:
        self.store, self.feed = store, feed
        self._inbox = AuditInbox(queue_size, audited)
        self._runs: dict[str, RunAudit] = {}
        self._lock = threading.Lock()
        self.counts = {"changes": 0, "errors": 0, "alerts": 0}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._inbox.start(self.feed, self._loop, "sentrycam-audit")

    def stop(self, timeout: float = 30.0) -> None:
        """Unsubscribe, finish what is queued, store the open alerts' latest state, stop."""
        self._inbox.stop(_STOP, timeout)
        self.flush_open_alerts()

    def alive(self) -> bool:
        """Whether the engine's thread runs."""
        return self._inbox.consuming()

    def flush_open_alerts(self) -> None:
        """Store the latest state of every run's open alerts (at shutdown)."""
        for audit in list(self._runs.values()):
            try:
                audit.book.flush()
            except Exception:
                log.exception("could not store the open alerts of run %s", audit.run_id)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once everything queued so far was processed (tests, benchmarks)."""
        return self._inbox.wait_idle(timeout)

    # -- worker -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            batch = self._inbox.take()
            if batch is _STOP:
                return
            self.process(batch)
            self._inbox.done(batch)

    def process(self, changes: Sequence[Change]) -> None:
        """Audit ``changes`` in order on the calling thread (the engine's own thread, or the
        audit process's loop: :mod:`sentrycam.backend.audit.process`)."""
        for change in changes:
            self._process(change)

    def _process(self, change: Change) -> None:
        try:
            audit = self._runs.get(change.run_id)
            if audit is None:
                audit = self._runs.setdefault(change.run_id, RunAudit(
                    change.run_id, self.store, self._publish))
                if change.step is not None:
                    self._catch_up(audit, int(change.step))
            audit.handle(change)
            with self._lock:
                self.counts["changes"] += 1
        except Exception:  # never let one bad change stop the audit of every run
            with self._lock:
                self.counts["errors"] += 1
            log.exception("audit of %s change of run %s failed", change.kind, change.run_id)

    def _catch_up(self, audit: RunAudit, step: int) -> None:
        started = time.monotonic()
        replayed = audit.catch_up(step)
        if replayed:
            log.info("audit of run %s caught up on %d stored changes before step %d in %.1f s",
                     audit.run_id, replayed, step, time.monotonic() - started)

    def _publish(self, alert: Alert) -> None:
        with self._lock:
            self.counts["alerts"] += 1
        record = alert.record() | {"alert_id": alert.alert_id, "run_id": alert.run_id}
        self.feed.publish([Change(alert.run_id, ChangeKind.ALERT, alert.step, alert.layer,
                                  record)])

    # -- status -------------------------------------------------------------------------------

    def run_status(self, run_id: str) -> dict[str, Any] | None:
        audit = self._runs.get(run_id)
        return audit.status() if audit is not None else None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counts, "dropped": self._inbox.dropped, "runs": len(self._runs),
                    "queued": self._inbox.size(), "kind": "thread"}
