"""Build push frames (see :mod:`sentrycam.frontend.frames`) from stored data and from changes.

Frame types, with their header fields and arrays:

- ``run``: ``summary`` (the store's run summary).
- ``probe``: arrays ``sample_id`` int64 [N], ``label`` int64 [N], ``split`` uint8 [N].
- ``scalars``: ``names``; arrays ``step`` int64 [R], ``name`` int32 [R] (index into names),
  ``value`` float64 [R].
- ``layer_stats``: ``layers``, ``stats``; arrays ``step`` int64, ``layer`` int32, ``stat``
  int32, ``value`` float64 [R].
- ``snapshots``: ``steps`` (every snapshot step so far); sent on connect and per new snapshot.
- ``embedding_index``: ``entries`` [[step, layer, n], ...].
- ``embedding``: ``step``, ``layer``, ``health`` {intra, inter, classes, spread (per
  class)}; arrays ``sample_id`` int64
  [N], ``xy`` float32 [N, 2], ``pred`` int64 [N] (-1: unknown), ``confidence``/``loss``
  float32 [N] (NaN: unknown).
- ``health``: ``layer``, ``classes``; arrays ``step`` int64, ``intra``/``inter`` float64
  [S], ``spread`` float64 [S, C] (each class's spread on each map).
- ``quality``: ``rows`` [[step, layer, metric, value], ...].
- ``alerts``: ``alerts`` (every alert of the run, as the store lists them).
- ``status``: the capture agent's counters (dropped, spooled, overhead, ...).
- ``projector``: ``state`` (what the projector worker published).
- ``event``: ``event``, ``message``, ``step``.
- ``caught_up``: end of the catch-up that opens every subscription.
- ``dropped``: ``count``, frames this subscriber lost because it read too slowly.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Sequence

import numpy as np

from sentrycam.backend.feed import Change
from sentrycam.backend.geometry import class_layout, training_labels
from sentrycam.backend.routes import json_safe
from sentrycam.backend.store import MissingSnapshotError, Store
from sentrycam.frontend.frames import encode_frame
from sentrycam.protocol.messages import SPLIT_HELDOUT

log = logging.getLogger(__name__)

#: Cluster-health history sent on connect covers at most this many snapshots per layer.
HEALTH_HISTORY = 400


def _codes(values: Sequence[str]) -> tuple[list[str], np.ndarray]:
    names, codes = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return [str(n) for n in names], codes.astype(np.int32)


def scalars_frame(run_id: str, step: Sequence[int], name: Sequence[str],
                  value: Sequence[float]) -> bytes:
    names, codes = _codes(name)
    return encode_frame("scalars", run_id, names=names, arrays={
        "step": np.asarray(step, dtype=np.int64), "name": codes,
        "value": np.asarray(value, dtype=np.float64)})


def layer_stats_frame(run_id: str, step: Sequence[int], layer: Sequence[str],
                      stat: Sequence[str], value: Sequence[float]) -> bytes:
    layers, layer_codes = _codes(layer)
    stats, stat_codes = _codes(stat)
    return encode_frame("layer_stats", run_id, layers=layers, stats=stats, arrays={
        "step": np.asarray(step, dtype=np.int64), "layer": layer_codes, "stat": stat_codes,
        "value": np.asarray(value, dtype=np.float64)})


def scalars_from_messages(run_id: str, messages: Iterable[Any]) -> bytes:
    rows = [(m.step, name, value) for m in messages for name, value in m.values.items()]
    step, name, value = zip(*rows) if rows else ((), (), ())
    return scalars_frame(run_id, step, name, [np.nan if v is None else v for v in value])


def layer_stats_from_messages(run_id: str, messages: Iterable[Any]) -> bytes:
    step, layer, stat, value = [], [], [], []
    for m in messages:
        values = np.asarray(m.values, dtype=np.float64).reshape(len(m.layers), len(m.stats))
        for i, layer_name in enumerate(m.layers):
            step += [m.step] * len(m.stats)
            layer += [layer_name] * len(m.stats)
            stat += list(m.stats)
            value += values[i].tolist()
    return layer_stats_frame(run_id, step, layer, stat, value)


class FrameBuilder:
    """Reads what a frame needs from the store; caches each run's probe labels (fixed per run).

    Used from the hub's worker thread and from catch-up threads: the cache is a plain dict
    whose entries are written whole, so concurrent use only risks computing one twice.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def labels(self, run_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(sample_id int64 [N], label int64 [N]) of the run's probe; empty until it arrives."""
        if run_id not in self._labels:
            probe = self.store.probe(run_id)
            if len(probe["sample_id"]) == 0:
                return probe["sample_id"], probe["label"]
            self._labels[run_id] = (probe["sample_id"], probe["label"])
        return self._labels[run_id]

    def run_frame(self, run_id: str) -> bytes:
        return encode_frame("run", run_id, summary=json_safe(self.store.run_summaries(run_id)[0]))

    def probe_frame(self, run_id: str) -> bytes:
        probe = self.store.probe(run_id)
        return encode_frame("probe", run_id, arrays={
            "sample_id": probe["sample_id"], "label": probe["label"], "split": probe["split"]})

    def snapshots_frame(self, run_id: str) -> bytes:
        steps = sorted({int(row["step"]) for row in self.store.snapshot_index(run_id)})
        return encode_frame("snapshots", run_id, steps=steps)

    def embedding_frame(self, run_id: str, layer: str, step: int) -> bytes:
        """The 2D map of (layer, step) with the model's outputs at that step and the map's
        cluster health. Raises MissingSnapshotError when it is not stored."""
        sample_ids, coords = self.store.embedding(run_id, layer, step)
        outputs = self._outputs(run_id, step, sample_ids)
        return encode_frame("embedding", run_id, step=int(step), layer=layer,
                            health=json_safe(self.health(run_id, sample_ids, coords)),
                            arrays={"sample_id": sample_ids, "xy": coords, **outputs})

    def _outputs(self, run_id: str, step: int, sample_ids: np.ndarray) -> dict[str, np.ndarray]:
        try:
            predictions = self.store.predictions(run_id, step)
        except MissingSnapshotError:  # retention or an embedding without its snapshot
            predictions = {"sample_id": np.zeros(0, dtype=np.int64)}
        ids = predictions["sample_id"]
        return {"pred": _aligned(ids, predictions.get("pred"), sample_ids, -1).astype(np.int64),
                **{name: _aligned(ids, predictions.get(name), sample_ids, np.nan)
                   .astype(np.float32) for name in ("confidence", "loss")}}

    def health(self, run_id: str, sample_ids: np.ndarray, coords: np.ndarray,
               probe: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Cluster health of one map, as :mod:`sentrycam.backend.geometry` defines it and the
        map geometry detectors see it (training split only): intra, inter (floats), classes
        (the probe's labels) and spread (list, one per class; NaN for a class not counted).
        ``probe``: the run's stored probe, when the caller has read it already."""
        probe = self.store.probe(run_id) if probe is None else probe
        labels = training_labels(probe["label"], probe["split"] == SPLIT_HELDOUT)
        layout = class_layout(coords, _aligned(probe["sample_id"], labels, sample_ids, -1))
        classes = np.unique(probe["label"][probe["label"] >= 0])
        intra, inter = layout.intra_inter()
        return {"intra": intra, "inter": inter, "classes": classes.tolist(),
                "spread": layout.spread_of(classes).tolist()}

    def health_columns(self, run_id: str, layer: str, steps: Sequence[int]) -> dict[str, Any]:
        """Cluster health of the stored maps of ``layer`` at ``steps`` (the newest
        :data:`HEALTH_HISTORY`): step int64, intra/inter float64 [S], spread float64 [S, C],
        and ``classes`` (list [C])."""
        steps = list(steps)[-HEALTH_HISTORY:]
        probe = self.store.probe(run_id)
        rows = [self.health(run_id, *self.store.embedding(run_id, layer, step), probe=probe)
                for step in steps]
        labels = probe["label"]
        classes = np.unique(labels[labels >= 0]).tolist()
        return {"step": np.asarray(steps, dtype=np.int64),
                "intra": np.asarray([r["intra"] for r in rows], np.float64),
                "inter": np.asarray([r["inter"] for r in rows], np.float64),
                "spread": np.asarray([r["spread"] for r in rows], np.float64).reshape(
                    len(rows), len(classes)), "classes": classes}

    def health_frame(self, run_id: str, layer: str, steps: Sequence[int]) -> bytes:
        columns = self.health_columns(run_id, layer, steps)
        return encode_frame("health", run_id, layer=layer, classes=columns.pop("classes"),
                            arrays=columns)

    def quality_frame(self, run_id: str, layer: str | None = None,
                      step: int | None = None) -> bytes:
        quality = self.store.projection_quality(run_id, layer)
        rows = [list(row) for row in zip(quality["step"], quality["layer"], quality["metric"],
                                         quality["value"]) if step is None or row[0] == step]
        return encode_frame("quality", run_id, rows=json_safe(rows))

    def alerts_frame(self, run_id: str) -> bytes:
        return encode_frame("alerts", run_id, alerts=json_safe(self.store.alerts(run_id)))

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
        frames.append(encode_frame("embedding_index", run_id, entries=[
            [int(e["step"]), e["layer"], int(e["n"])] for e in index]))
        by_layer: dict[str, list[int]] = {}
        for entry in index:
            by_layer.setdefault(entry["layer"], []).append(int(entry["step"]))
        for layer, steps in by_layer.items():
            frames.append(self.health_frame(run_id, layer, steps))
            frames.append(self.embedding_frame(run_id, layer, steps[-1]))
        frames += [self.quality_frame(run_id), self.alerts_frame(run_id),
                   encode_frame("caught_up", run_id)]
        return frames

    def live(self, run_id: str, changes: Sequence[Change]) -> list[bytes]:
        """The frames announcing ``changes`` (all of ``run_id``, in publish order): messages
        of a kind are merged into one frame; derived data is read back from the store."""
        by_kind: dict[str, list[Change]] = {}
        for change in changes:
            by_kind.setdefault(change.kind, []).append(change)
        frames = []
        for kind, group in by_kind.items():
            try:
                frames += self._live_kind(run_id, kind, group)
            except MissingSnapshotError as exc:  # replaced or dropped since it was announced
                log.info("push hub: %s", exc)
        return frames

    def _live_kind(self, run_id: str, kind: str, group: list[Change]) -> list[bytes]:
        messages = [c.message for c in group if c.message is not None]
        if kind == "scalars":
            return [scalars_from_messages(run_id, messages)]
        if kind == "layer_stats":
            return [layer_stats_from_messages(run_id, messages)]
        if kind in ("run_start", "run_end"):
            return [self.run_frame(run_id)]
        if kind == "probe":
            self._labels.pop(run_id, None)
            return [self.probe_frame(run_id)]
        if kind == "snapshot":
            return [self.snapshots_frame(run_id)]
        if kind == "status":
            return [encode_frame("status", run_id, **_fields(m)) for m in messages[-1:]]
        if kind == "event":
            return [encode_frame("event", run_id, **_fields(m)) for m in messages]
        if kind == "projector":
            return [encode_frame("projector", run_id, state=_fields(m)) for m in messages[-1:]]
        if kind == "alert":
            return [self.alerts_frame(run_id)]
        keys = list(dict.fromkeys((c.layer, c.step) for c in group))
        if kind == "embedding":
            return [self.embedding_frame(run_id, layer, step) for layer, step in keys]
        if kind == "quality":
            return [self.quality_frame(run_id, layer, step) for layer, step in keys]
        return []


def _fields(message: Any) -> dict[str, Any]:
    """A message (dataclass or mapping) as JSON-safe header fields."""
    if dataclasses.is_dataclass(message):
        message = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    if not isinstance(message, dict):
        message = {"value": message}
    message = {k: v for k, v in message.items() if k not in ("run_id", "type", "arrays")}
    return json_safe(message)


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
