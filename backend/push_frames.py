"""Build push frames (:mod:`sentrycam.protocol.push`, which declares every frame type's
fields and arrays) from stored data and from the change feed's changes.

:meth:`FrameBuilder.catch_up` is the whole stored run; :meth:`FrameBuilder.live` turns a batch
of changes into frames through :data:`LIVE_FRAMES`, one entry per :class:`ChangeKind` (or the
kind is listed in :data:`NOT_PUSHED`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from sentrycam.backend.feed import Change
from sentrycam.backend.geometry import class_layout, training_labels
from sentrycam.backend.store import MissingSnapshotError, Store
from sentrycam.protocol import push
from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.messages import SPLIT_HELDOUT, ScalarSeries

log = logging.getLogger(__name__)

#: Cluster-health history sent on connect covers at most this many snapshots per layer.
HEALTH_HISTORY = 400


def _codes(values: Sequence[str]) -> tuple[list[str], np.ndarray]:
    names, codes = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return [str(n) for n in names], codes.astype(np.int32)


def scalars_frame(run_id: str, step: Sequence[int], name: Sequence[str],
                  value: Sequence[float]) -> bytes:
    names, codes = _codes(name)
    return push.encode(push.ScalarsHeader(run_id=run_id, names=names), {
        "step": np.asarray(step, dtype=np.int64), "name": codes,
        "value": np.asarray(value, dtype=np.float64)})


def layer_stats_frame(run_id: str, step: Sequence[int], layer: Sequence[str],
                      stat: Sequence[str], value: Sequence[float]) -> bytes:
    layers, layer_codes = _codes(layer)
    stats, stat_codes = _codes(stat)
    return push.encode(push.LayerStatsHeader(run_id=run_id, layers=layers, stats=stats), {
        "step": np.asarray(step, dtype=np.int64), "layer": layer_codes, "stat": stat_codes,
        "value": np.asarray(value, dtype=np.float64)})


def scalars_from_messages(run_id: str, messages: Iterable[Any]) -> bytes:
    """One frame of every (step, name, value) of Scalars and ScalarSeries ``messages``."""
    step: list[int] = []
    name: list[str] = []
    value: list[float] = []
    for m in messages:
        if isinstance(m, ScalarSeries):
            steps, names, values, _ = m.long_rows()
            step += steps.tolist()
            name += names
            value += values.tolist()
        else:
            step += [m.step] * len(m.values)
            name += list(m.values)
            value += [np.nan if v is None else v for v in m.values.values()]
    return scalars_frame(run_id, step, name, value)


def layer_stats_from_messages(run_id: str, messages: Iterable[Any]) -> bytes:
    """One frame of every (step, layer, stat, value) row of ``messages`` (each's ``values``
    float [layers, stats], row-major), built per message with numpy, not per value."""
    step, layer, stat, value = [], [], [], []
    for m in messages:
        n_layers, n_stats = len(m.layers), len(m.stats)
        step.append(np.full(n_layers * n_stats, m.step, dtype=np.int64))
        layer.append(np.repeat(np.asarray(m.layers, dtype=object), n_stats))
        stat.append(np.tile(np.asarray(m.stats, dtype=object), n_layers))
        value.append(np.asarray(m.values, dtype=np.float64).reshape(-1))
    if not step:
        return layer_stats_frame(run_id, [], [], [], [])
    return layer_stats_frame(run_id, np.concatenate(step), np.concatenate(layer),
                             np.concatenate(stat), np.concatenate(value))


def dropped_frame(run_id: str, count: int) -> bytes:
    """Tells a subscriber that ``count`` frames were dropped for it so far."""
    return push.encode(push.DroppedHeader(run_id=run_id, count=count))


class FrameBuilder:
    """Reads what a frame needs from the store; caches each run's probe labels (fixed per run)
    and, for live frames, each run's snapshot steps (steps are only ever added).

    Used from the hub's worker thread and from catch-up threads: the labels cache is a plain
    dict whose entries are written whole, so concurrent use only risks computing one twice;
    the steps cache is used by the hub's worker thread alone (a catch-up reads the store).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._labels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._steps: dict[str, set[int]] = {}

    def labels(self, run_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The run's probe as cluster health counts it: (sample_id int64 [N], training label
        int64 [N] (-1: held out or unknown), classes int64 [C] (every known label)). Cached
        once the probe has arrived (it is fixed per run); empty arrays until then."""
        if run_id not in self._labels:
            probe = self.store.probe(run_id)
            labels = probe["label"]
            found = (probe["sample_id"],
                     training_labels(labels, probe["split"] == SPLIT_HELDOUT),
                     np.unique(labels[labels >= 0]))
            if len(found[0]) == 0:
                return found
            self._labels[run_id] = found
        return self._labels[run_id]

    def run_frame(self, run_id: str) -> bytes:
        return push.encode(push.RunHeader(run_id=run_id,
                                          summary=self.store.run_summaries(run_id)[0]))

    def probe_frame(self, run_id: str) -> bytes:
        probe = self.store.probe(run_id)
        return push.encode(push.ProbeHeader(run_id=run_id), {
            "sample_id": probe["sample_id"], "label": probe["label"], "split": probe["split"]})

    def snapshots_frame(self, run_id: str, steps: Iterable[int] | None = None) -> bytes:
        """Every snapshot step of the run: ``steps``, or read from the store."""
        if steps is None:
            steps = self._stored_steps(run_id)
        return push.encode(push.SnapshotsHeader(run_id=run_id, steps=sorted(steps)))

    def forget_steps(self) -> None:
        """Read each run's steps from the store again (changes were lost on the way)."""
        self._steps.clear()

    def _stored_steps(self, run_id: str) -> set[int]:
        return {int(row["step"]) for row in self.store.snapshot_index(run_id)}

    def embedding_frame(self, run_id: str, layer: str, step: int) -> bytes:
        """The 2D map of (layer, step) with the model's outputs at that step and the map's
        cluster health. Raises MissingSnapshotError when it is not stored."""
        sample_ids, coords = self.store.embedding(run_id, layer, step)
        outputs = self._outputs(run_id, step, sample_ids)
        header = push.EmbeddingHeader(run_id=run_id, step=int(step), layer=layer,
                                      health=self.health(run_id, sample_ids, coords))
        return push.encode(header, {"sample_id": sample_ids, "xy": coords, **outputs})

    def _outputs(self, run_id: str, step: int, sample_ids: np.ndarray) -> dict[str, np.ndarray]:
        try:
            predictions = self.store.predictions(run_id, step)
        except MissingSnapshotError:  # retention or an embedding without its snapshot
            predictions = {"sample_id": np.zeros(0, dtype=np.int64)}
        ids = predictions["sample_id"]
        return {"pred": _aligned(ids, predictions.get("pred"), sample_ids, -1).astype(np.int64),
                **{name: _aligned(ids, predictions.get(name), sample_ids, np.nan)
                   .astype(np.float32) for name in ("confidence", "loss")}}

    def health(self, run_id: str, sample_ids: np.ndarray, coords: np.ndarray) -> dict[str, Any]:
        """Cluster health of one map (``sample_ids`` int64 [N], ``coords`` float32 [N, 2]), as
        :mod:`sentrycam.backend.geometry` defines it and the map geometry detectors see it
        (training split only): intra, inter (floats), classes (the probe's labels) and spread
        (list, one per class; NaN for a class not counted)."""
        ids, labels, classes = self.labels(run_id)
        layout = class_layout(coords, _aligned(ids, labels, sample_ids, -1))
        intra, inter = layout.intra_inter()
        return {"intra": intra, "inter": inter, "classes": classes.tolist(),
                "spread": layout.spread_of(classes).tolist()}

    def health_columns(self, run_id: str, layer: str, steps: Sequence[int]) -> dict[str, Any]:
        """Cluster health of the stored maps of ``layer`` at ``steps`` (the newest
        :data:`HEALTH_HISTORY`): step int64, intra/inter float64 [S], spread float64 [S, C],
        and ``classes`` (list [C])."""
        steps = list(steps)[-HEALTH_HISTORY:]
        rows = [self.health(run_id, *self.store.embedding(run_id, layer, step)) for step in steps]
        classes = self.labels(run_id)[2].tolist()
        return {"step": np.asarray(steps, dtype=np.int64),
                "intra": np.asarray([r["intra"] for r in rows], np.float64),
                "inter": np.asarray([r["inter"] for r in rows], np.float64),
                "spread": np.asarray([r["spread"] for r in rows], np.float64).reshape(
                    len(rows), len(classes)), "classes": classes}

    def health_frame(self, run_id: str, layer: str, steps: Sequence[int]) -> bytes:
        columns = self.health_columns(run_id, layer, steps)
        header = push.HealthHeader(run_id=run_id, layer=layer, classes=columns.pop("classes"))
        return push.encode(header, columns)

    def quality_frame(self, run_id: str, layer: str | None = None,
                      step: int | None = None) -> bytes:
        quality = self.store.projection_quality(run_id, layer)
        rows = [row for row in zip(quality["step"], quality["layer"], quality["metric"],
                                   _floats(quality["value"])) if step is None or row[0] == step]
        return push.encode(push.QualityHeader(run_id=run_id, rows=rows))

    def alerts_frame(self, run_id: str) -> bytes:
        return push.encode(push.AlertsHeader(run_id=run_id, alerts=self.store.alerts(run_id)))

    def embedding_index_frame(self, run_id: str, index: Sequence[dict[str, Any]]) -> bytes:
        entries = [(int(e["step"]), e["layer"], int(e["n"])) for e in index]
        return push.encode(push.EmbeddingIndexHeader(run_id=run_id, entries=entries))

    def catch_up(self, run_id: str) -> list[bytes]:
        """Everything stored about a run, as the frames a new subscriber starts from: the
        whole history of scalars, statistics, snapshot steps, cluster health and quality, the
        newest map of each layer (earlier maps are fetched on demand over REST), alerts."""
        store = self.store
        frames = [self.run_frame(run_id), self.probe_frame(run_id)]
        scalars = store.scalars(run_id)
        frames.append(scalars_frame(run_id, scalars["step"], scalars["name"], _floats(
            scalars["value"])))
        stats = store.layer_stats(run_id)
        frames.append(layer_stats_frame(run_id, stats["step"], stats["layer"], stats["stat"],
                                        _floats(stats["value"])))
        frames.append(self.snapshots_frame(run_id))
        index = store.embedding_index(run_id)
        frames.append(self.embedding_index_frame(run_id, index))
        by_layer: dict[str, list[int]] = {}
        for entry in index:
            by_layer.setdefault(entry["layer"], []).append(int(entry["step"]))
        for layer, steps in by_layer.items():
            frames.append(self.health_frame(run_id, layer, steps))
            frames.append(self.embedding_frame(run_id, layer, steps[-1]))
        frames += [self.quality_frame(run_id), self.alerts_frame(run_id),
                   push.encode(push.CaughtUpHeader(run_id=run_id))]
        return frames

    def live(self, run_id: str, changes: Sequence[Change]) -> list[bytes]:
        """The frames announcing ``changes`` (all of ``run_id``, in publish order): changes
        of a kind are merged (see :data:`LIVE_FRAMES`); derived data is read back from the
        store."""
        by_kind: dict[ChangeKind, list[Change]] = {}
        for change in changes:
            by_kind.setdefault(change.kind, []).append(change)
        frames = []
        for kind, group in by_kind.items():
            build = LIVE_FRAMES.get(kind)
            if build is None:
                continue
            try:
                frames += build(self, run_id, group)
            except MissingSnapshotError as exc:  # replaced or dropped since it was announced
                log.info("push hub: %s", exc)
        return frames

    # ------------------------------------------------------------------ live, per kind
    def _scalars_changed(self, run_id: str, group: list[Change]) -> list[bytes]:
        return [scalars_from_messages(run_id, _messages(group))]

    def _layer_stats_changed(self, run_id: str, group: list[Change]) -> list[bytes]:
        return [layer_stats_from_messages(run_id, _messages(group))]

    def _run_changed(self, run_id: str, group: list[Change]) -> list[bytes]:
        return [self.run_frame(run_id)]

    def _probe_changed(self, run_id: str, group: list[Change]) -> list[bytes]:
        self._labels.pop(run_id, None)
        return [self.probe_frame(run_id)]

    def _snapshot_changed(self, run_id: str, group: list[Change]) -> list[bytes]:
        """The run's steps are read once, then the announced ones added: a run's frames
        would otherwise each read its whole snapshot index."""
        steps = self._steps.get(run_id)
        if steps is None:  # the store holds these changes' steps already (they are committed)
            steps = self._steps[run_id] = self._stored_steps(run_id)
        steps.update(int(c.step) for c in group if c.step is not None)
        return [self.snapshots_frame(run_id, steps)]

    def _status_changed(self, run_id: str, group: list[Change]) -> list[bytes]:
        """Only the newest status: its counters are totals."""
        return [push.encode(push.StatusHeader(run_id=run_id, **_fields(m)))
                for m in _messages(group)[-1:]]

    def _event_changed(self, run_id: str, group: list[Change]) -> list[bytes]:
        return [push.encode(push.EventHeader(run_id=run_id, **_fields(m)))
                for m in _messages(group)]

    def _projector_changed(self, run_id: str, group: list[Change]) -> list[bytes]:
        return [push.encode(push.ProjectorHeader(run_id=run_id, state=_fields(m)))
                for m in _messages(group)[-1:]]

    def _alert_changed(self, run_id: str, group: list[Change]) -> list[bytes]:
        return [self.alerts_frame(run_id)]

    def _embedding_changed(self, run_id: str, group: list[Change]) -> list[bytes]:
        return [self.embedding_frame(run_id, layer, step) for layer, step in _maps(group)]

    def _quality_changed(self, run_id: str, group: list[Change]) -> list[bytes]:
        return [self.quality_frame(run_id, layer, step) for layer, step in _maps(group)]


#: How the push hub announces each kind of change: the frames built from a run's changes of
#: that kind (all of one batch at once).
LIVE_FRAMES: dict[ChangeKind, Callable[[FrameBuilder, str, list[Change]], list[bytes]]] = {
    ChangeKind.RUN_START: FrameBuilder._run_changed,
    ChangeKind.PROBE: FrameBuilder._probe_changed,
    ChangeKind.SCALARS: FrameBuilder._scalars_changed,
    ChangeKind.LAYER_STATS: FrameBuilder._layer_stats_changed,
    ChangeKind.SNAPSHOT: FrameBuilder._snapshot_changed,
    ChangeKind.EVENT: FrameBuilder._event_changed,
    ChangeKind.STATUS: FrameBuilder._status_changed,
    ChangeKind.RUN_END: FrameBuilder._run_changed,
    ChangeKind.EMBEDDING: FrameBuilder._embedding_changed,
    ChangeKind.QUALITY: FrameBuilder._quality_changed,
    ChangeKind.PROJECTOR: FrameBuilder._projector_changed,
    ChangeKind.ALERT: FrameBuilder._alert_changed,
}
#: Kinds of change that dashboards are not told about.
NOT_PUSHED: frozenset[ChangeKind] = frozenset()


def _messages(group: list[Change]) -> list[Any]:
    return [c.message for c in group if c.message is not None]


def _maps(group: list[Change]) -> list[tuple[str, int]]:
    """The distinct (layer, step) of ``group``, in order."""
    return list(dict.fromkeys((c.layer, c.step) for c in group))


def _fields(message: Any) -> dict[str, Any]:
    """A message (dataclass or mapping) as header fields (without its ``run_id``)."""
    if dataclasses.is_dataclass(message):
        message = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    if not isinstance(message, dict):
        message = {"value": message}
    return {k: v for k, v in message.items() if k != "run_id"}


def _floats(values: Sequence[Any]) -> list[float]:
    return [np.nan if v is None else v for v in values]


def _aligned(ids: np.ndarray, values: np.ndarray | None, wanted: np.ndarray,
             fill: float) -> np.ndarray:
    """``values`` (given for sorted ``ids``) at ``wanted`` ids; ``fill`` where absent."""
    out = np.full(len(wanted), fill, dtype=np.float64)
    if values is None or len(ids) == 0:
        return out
    where = np.clip(np.searchsorted(ids, wanted), 0, len(ids) - 1)
    found = ids[where] == wanted
    out[found] = np.asarray(values, dtype=np.float64)[where[found]]
    return out
