"""A stored run as the change feed delivered it: the messages of each step rebuilt from the
store, in step order. Used to replay a run offline (:mod:`.replay`) and to bring the engine's
detectors up to date with a run it meets mid-way (a server restart)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterator

import numpy as np

from sentrycam.backend.feed import Change
from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.messages import LayerStats, ProbeSet, Scalars, Snapshot


def stored_changes(store: Any, run_id: str, before_step: int | None = None
                   ) -> Iterator[Change]:
    """The run's stored messages as feed changes, step by step (scalars, layer statistics,
    snapshot; embeddings last within a step), up to ``before_step`` (excluded) when given.
    Snapshots are read from the store one at a time, as they are yielded."""
    probe = store.probe(run_id)
    if len(probe["sample_id"]):
        yield Change(run_id, ChangeKind.PROBE, None, None, ProbeSet(
            run_id, probe["sample_id"], probe["label"], probe["split"]))
    scalars: dict[int, dict[str, float]] = defaultdict(dict)
    columns = store.scalars(run_id)
    for step, name, value in zip(columns["step"], columns["name"], columns["value"]):
        scalars[int(step)][str(name)] = float(value) if value is not None else float("nan")
    stats = _layer_stats(store.layer_stats(run_id))
    snapshots: dict[int, list[str]] = defaultdict(list)
    epochs: dict[int, int] = {}
    for row in store.snapshot_index(run_id):
        if row.get("has_features", True):
            snapshots[int(row["step"])].append(row["layer"])
            epochs[int(row["step"])] = int(row.get("epoch") or 0)
    maps = defaultdict(list)
    for row in _embedding_index(store, run_id):
        maps[int(row["step"])].append(row["layer"])
    for step in sorted(set(scalars) | set(stats) | set(snapshots) | set(maps)):
        if before_step is not None and step >= before_step:
            return
        if step in scalars:
            yield Change(run_id, ChangeKind.SCALARS, step, None,
                         Scalars(run_id, step, 0.0, scalars[step]))
        if step in stats:
            layers, names, values = stats[step]
            yield Change(run_id, ChangeKind.LAYER_STATS, step, None,
                         LayerStats(run_id, step, layers, names, values))
        if step in snapshots:
            yield Change(run_id, ChangeKind.SNAPSHOT, step, None,
                         _snapshot(store, run_id, step, epochs[step], snapshots[step]))
        for layer in maps.get(step, []):
            yield Change(run_id, ChangeKind.EMBEDDING, step, layer)


def _layer_stats(columns: dict[str, list]) -> dict[int, tuple[tuple, tuple, np.ndarray]]:
    rows: dict[int, dict[tuple[str, str], float]] = defaultdict(dict)
    for step, layer, stat, value in zip(columns["step"], columns["layer"], columns["stat"],
                                        columns["value"]):
        rows[int(step)][(str(layer), str(stat))] = np.nan if value is None else float(value)
    out = {}
    for step, cells in rows.items():
        layers = tuple(dict.fromkeys(layer for layer, _ in cells))
        names = tuple(dict.fromkeys(stat for _, stat in cells))
        values = np.full((len(layers), len(names)), np.nan, dtype=np.float32)
        for (layer, stat), value in cells.items():
            values[layers.index(layer), names.index(stat)] = value
        out[step] = (layers, names, values)
    return out


def _snapshot(store: Any, run_id: str, step: int, epoch: int, layers: list[str]) -> Snapshot:
    predictions = store.predictions(run_id, step)
    sample_ids = np.asarray(predictions["sample_id"], dtype=np.int64)
    features = {}
    for layer in layers:
        ids, vectors = store.features(run_id, step, layer)
        order = {int(s): i for i, s in enumerate(ids)}
        features[layer] = vectors[[order[int(s)] for s in sample_ids]] if len(sample_ids) \
            else vectors
    if not len(sample_ids) and features:
        sample_ids = np.asarray(store.features(run_id, step, layers[0])[0], dtype=np.int64)
    outputs = {name: np.asarray(predictions[name]) for name in
               ("pred", "confidence", "loss", "entropy", "margin") if name in predictions}
    return Snapshot(run_id, step, epoch, sample_ids, outputs, features)


def _embedding_index(store: Any, run_id: str) -> list[dict]:
    try:
        return store.embedding_index(run_id)
    except AttributeError:
        return []
