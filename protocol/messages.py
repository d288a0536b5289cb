"""Typed messages that travel from a training process to the sentrycam server.

Every message is a frozen dataclass. The transport wraps each one in a frame with a
per-run sequence number (see :mod:`sentrycam.capture.wire`); the server validates the
frame header with pydantic models and rebuilds these same dataclasses in process.

Vocabulary used everywhere in sentrycam:

- ``run_id``: a string (uuid4 hex) made by the training process; stable across retries.
- ``step``: the number of optimizer steps taken so far (0-based for the first step).
- ``layer``: a captured representation, named after its module (``"fc:input"`` for the
  input of module ``fc``).
- ``snapshot``: the probe set's features and outputs at one step.
- ``sample_id``: the stable id of a probe sample (its index in the probe source).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Union

import numpy as np

#: Version of the message schema; bumped when a message's fields change.
SCHEMA_VERSION = 1

#: Split codes stored with each probe sample.
SPLIT_TRAIN = 0
SPLIT_HELDOUT = 1


class _Wire:
    """Which fields travel as arrays: ``array_fields`` hold one array each, ``array_map_fields``
    map names to arrays. Everything else travels in the JSON header."""

    kind: ClassVar[str] = ""
    array_fields: ClassVar[tuple[str, ...]] = ()
    array_map_fields: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class RunStart(_Wire):
    """Opens a run. ``config`` is JSON-serialisable (layers, probe size, schedule, model summary)."""

    run_id: str
    name: str
    started_at: float
    config: Mapping[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "run_start"


@dataclass(frozen=True)
class ProbeSet(_Wire):
    """The fixed probe samples of a run.

    Arrays: ``sample_ids`` int64 [N] (unique), ``labels`` int64 [N] (-1 where unknown),
    ``split`` uint8 [N] (``SPLIT_TRAIN`` or ``SPLIT_HELDOUT``).
    """

    run_id: str
    sample_ids: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    kind: ClassVar[str] = "probe"
    array_fields: ClassVar[tuple[str, ...]] = ("sample_ids", "labels", "split")


@dataclass(frozen=True)
class Scalars(_Wire):
    """Scalar values at one step, e.g. ``{"loss": 0.3, "lr": 1e-3, "grad_norm": 2.1}``.

    Values are Python floats; NaN and Inf are allowed and stored as such.
    """

    run_id: str
    step: int
    wall_time: float
    values: Mapping[str, float]
    kind: ClassVar[str] = "scalars"


@dataclass(frozen=True)
class LayerStats(_Wire):
    """Per-layer statistics at one step.

    ``values`` float32 [len(layers), len(stats)]; NaN where a statistic does not apply.
    Typical stats: grad_norm, weight_norm, update_ratio, act_mean, act_std, dead_frac,
    sat_frac, eff_rank, nonfinite.
    """

    run_id: str
    step: int
    layers: tuple[str, ...]
    stats: tuple[str, ...]
    values: np.ndarray
    kind: ClassVar[str] = "layer_stats"
    array_fields: ClassVar[tuple[str, ...]] = ("values",)


@dataclass(frozen=True)
class Snapshot(_Wire):
    """The probe set seen by the model at one step.

    Arrays: ``sample_ids`` int64 [N]; ``outputs`` maps a name to a [N] array:
    ``pred`` int64, ``confidence``/``loss``/``entropy``/``margin`` float32 (NaN when unknown);
    ``features`` maps a layer to float16 [N, D_layer] (rows in ``sample_ids`` order).
    ``nonfinite`` counts NaN/Inf values per layer before the float16 cast.
    """

    run_id: str
    step: int
    epoch: int
    sample_ids: np.ndarray
    outputs: Mapping[str, np.ndarray]
    features: Mapping[str, np.ndarray]
    nonfinite: Mapping[str, int] = field(default_factory=dict)
    kind: ClassVar[str] = "snapshot"
    array_fields: ClassVar[tuple[str, ...]] = ("sample_ids",)
    array_map_fields: ClassVar[tuple[str, ...]] = ("outputs", "features")


@dataclass(frozen=True)
class Event(_Wire):
    """Something that happened, for the run's event log (``payload`` is JSON-serialisable)."""

    run_id: str
    step: int
    wall_time: float
    event: str
    message: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "event"


@dataclass(frozen=True)
class Status(_Wire):
    """The capture agent's own health: counters are totals since attach."""

    run_id: str
    step: int
    dropped: int
    spooled: int
    overhead: float
    snapshot_every: int
    queue_depth: int
    kind: ClassVar[str] = "status"


@dataclass(frozen=True)
class RunEnd(_Wire):
    """Closes a run. ``status`` is ``"finished"``, ``"detached"`` or ``"failed"``."""

    run_id: str
    step: int
    status: str
    kind: ClassVar[str] = "run_end"


Message = Union[RunStart, ProbeSet, Scalars, LayerStats, Snapshot, Event, Status, RunEnd]

MESSAGE_TYPES: dict[str, type] = {
    cls.kind: cls
    for cls in (RunStart, ProbeSet, Scalars, LayerStats, Snapshot, Event, Status, RunEnd)
}
