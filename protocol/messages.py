"""Typed messages that travel from a training process to the sentrycam server.

Every message is a frozen dataclass whose fields are declared once, here, with their
constraints (``typing.Annotated`` with ``annotated_types`` bounds and the markers of
:mod:`~sentrycam.protocol.fields`: arrays, unique names, allowed values). Everything else is
derived from these declarations: the frame codec's split into header fields and arrays
(:mod:`sentrycam.protocol.wire`), the server's strict check of an incoming frame and the
store's check of an in-process batch (:mod:`sentrycam.protocol.validation`). Building a
message checks nothing (the trainer's hot path stays a plain dataclass construction).

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
from typing import Annotated, Any, Literal, Mapping, Union

import numpy as np
from annotated_types import Ge, Le, MaxLen, MinLen

from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.fields import (INT64_MAX, Array, ArrayMap, Declared, KeysOf, Matches,
                                       Spans, Unique, declare)

#: Version of the message schema; bumped when a message's fields or the meaning of its frame
#: header change. 2: a run's seq numbers count from 0, one run at a time (a trainer of version
#: 1 numbered from 1 and would be refused seq by seq; the version check tells it to upgrade).
#: 3: a snapshot may travel as row chunks (``Snapshot.row_offset``, ``Snapshot.rows_total``).
#: 4: the scalars of many steps travel as one ``ScalarSeries`` (a batch of quiet steps was one
#: frame per step; a server of version 3 would refuse the new kind).
SCHEMA_VERSION = 4
#: The oldest version a server still reads: a version-2 frame is a version-3 frame whose
#: snapshots are whole (the chunk fields take their defaults), and versions 2 and 3 are
#: version 4 without ScalarSeries, so spools written before an upgrade still replay.
OLDEST_READ_VERSION = 2

#: Split codes stored with each probe sample.
SPLIT_TRAIN = 0
SPLIT_HELDOUT = 1
SPLITS = {SPLIT_TRAIN: "train", SPLIT_HELDOUT: "held out"}

#: How a run can end (``RunEnd.status``); a run that has not ended is "running".
END_STATUSES = ("finished", "detached", "failed")

NAME_MAX = 200
#: The most steps one ScalarSeries may hold (a trainer sends a batch of at most BATCH_STEPS).
SERIES_MAX_STEPS = 4096
RUN_ID_MAX = 64

#: What a run_id may be; callable: ``RUN_ID_RULE(value)`` is True for a valid one.
RUN_ID_RULE = Matches(rf"[A-Za-z0-9_-]{{1,{RUN_ID_MAX}}}",
                      f"1-{RUN_ID_MAX} characters of A-Z a-z 0-9 _ -")
RunId = Annotated[str, RUN_ID_RULE]
#: seq, step and counters: BIGINT columns in the store.
Count = Annotated[int, Ge(0), Le(INT64_MAX)]
Name = Annotated[str, MinLen(1), MaxLen(NAME_MAX)]
Names = Annotated[tuple[Name, ...], MinLen(1), Unique()]
#: NaN and +-Inf are allowed (spelled "nan", "inf", "-inf" in a frame's JSON header).
Float = float
Json = Mapping[str, Any]


@declare(ChangeKind.RUN_START)
@dataclass(frozen=True)
class RunStart(Declared):
    """Opens a run. ``config`` is JSON-serialisable (layers, probe size, schedule, model
    summary)."""

    run_id: RunId
    name: Annotated[str, MaxLen(NAME_MAX)]
    started_at: Float
    config: Json = field(default_factory=dict)


@declare(ChangeKind.PROBE)
@dataclass(frozen=True)
class ProbeSet(Declared):
    """The fixed probe samples of a run (at least one)."""

    run_id: RunId
    sample_ids: Annotated[np.ndarray, Array("<i8", ("N>0",), unique=True)]
    labels: Annotated[np.ndarray, Array("<i8", ("N",))]  # -1 where unknown
    split: Annotated[np.ndarray, Array("|u1", ("N",), allowed=SPLITS)]


@declare(ChangeKind.SCALARS)
@dataclass(frozen=True)
class Scalars(Declared):
    """Scalar values at one step, e.g. ``{"loss": 0.3, "lr": 1e-3, "grad_norm": 2.1}``."""

    run_id: RunId
    step: Count
    wall_time: Float
    values: Mapping[Name, Float]


@declare(ChangeKind.SCALARS, kind="scalar_series")
@dataclass(frozen=True)
class ScalarSeries(Declared):
    """The scalars of several steps of one run, in step order: the same change as one
    :class:`Scalars` per step, in one frame.

    ``steps`` int64 [N], 1 <= N <= SERIES_MAX_STEPS, strictly increasing, >= 0;
    ``wall_times`` float64 [N]; ``values`` float64 [N, len(names)]: every step has a value
    for every name (NaN and Inf are values, as in Scalars; steps whose names differ travel in
    separate series).
    """

    run_id: RunId
    names: Names
    steps: Annotated[np.ndarray, Array("<i8", ("N>0",), max_rows=SERIES_MAX_STEPS,
                                       increasing=True, minimum=0)]
    wall_times: Annotated[np.ndarray, Array("<f8", ("N",))]
    values: Annotated[np.ndarray, Array("<f8", ("N", "len(names)"))]

    @property
    def step(self) -> int:
        """The last step held: the step a change of this message is announced at."""
        return int(self.steps[-1])

    def long_rows(self) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """One row per (step, name), step by step: ``(steps, names, values, wall_times)``,
        int64 [N*K], K names repeated N times, float64 [N*K], float64 [N*K]."""
        n_steps, n_names = len(self.steps), len(self.names)
        return (np.repeat(np.asarray(self.steps, dtype=np.int64), n_names),
                list(self.names) * n_steps, np.asarray(self.values, dtype=np.float64).ravel(),
                np.repeat(np.asarray(self.wall_times, dtype=np.float64), n_names))

    def scalars(self) -> list[Scalars]:
        """One Scalars per step, in step order (what the series stands for)."""
        names = self.names
        return [Scalars(self.run_id, step, wall_time, dict(zip(names, row)))
                for step, wall_time, row in zip(self.steps.tolist(), self.wall_times.tolist(),
                                                self.values.tolist())]


def per_step_scalars(message: Scalars | ScalarSeries) -> list[Scalars]:
    """The per-step Scalars a scalars message stands for (a Scalars is its own)."""
    return message.scalars() if isinstance(message, ScalarSeries) else [message]


@declare(ChangeKind.LAYER_STATS)
@dataclass(frozen=True)
class LayerStats(Declared):
    """Per-layer statistics at one step; ``values`` NaN where a statistic does not apply.

    Typical stats: grad_norm, weight_norm, update_ratio, act_mean, act_std, dead_frac,
    sat_frac, eff_rank, nonfinite.
    """

    run_id: RunId
    step: Count
    layers: Names
    stats: Names
    values: Annotated[np.ndarray, Array("<f4", ("len(layers)", "len(stats)"))]


#: dtypes of the snapshot outputs the store knows; any other output name may use OUTPUT_DTYPES.
KNOWN_OUTPUTS = {"pred": "<i8", "confidence": "<f4", "loss": "<f4", "entropy": "<f4",
                 "margin": "<f4"}
OUTPUT_DTYPES = ("<f4", "<f8", "<i8", "<i4", "|u1", "|b1")


@declare(ChangeKind.SNAPSHOT)
@dataclass(frozen=True)
class Snapshot(Declared):
    """The probe set seen by the model at one step (rows of every array in ``sample_ids`` order).

    ``outputs`` maps a name to a [N] array (``KNOWN_OUTPUTS`` gives the dtypes of the known
    names; NaN when unknown); ``features`` maps a layer to its float16 vectors.
    ``nonfinite`` counts NaN/Inf values per layer before the float16 cast.
    ``epoch`` is -1 when the trainer has no notion of epochs.

    A large snapshot travels as row chunks (:func:`sentrycam.protocol.chunks.snapshot_chunks`),
    each a Snapshot of rows ``row_offset .. row_offset + N`` of ``rows_total``, sent in row
    order one after the other; ``nonfinite`` then counts the whole snapshot and is sent with
    the first chunk. ``rows_total`` None: the message is the whole snapshot. The store shows
    a chunked snapshot only once all its rows are in.
    """

    run_id: RunId
    step: Count
    epoch: Annotated[int, Ge(-1), Le(INT64_MAX)]
    sample_ids: Annotated[np.ndarray, Array("<i8", ("N",), unique=True)]
    outputs: Annotated[Mapping[Name, np.ndarray],
                       ArrayMap(OUTPUT_DTYPES, ("N",), by_key=KNOWN_OUTPUTS)]
    features: Annotated[Mapping[Name, np.ndarray], ArrayMap(("<f2",), ("N", "D>0"))]
    nonfinite: Annotated[Mapping[Name, Count], KeysOf("features")] = field(default_factory=dict)
    row_offset: Count = 0
    rows_total: Annotated[Count | None, Spans("row_offset", "N")] = None

    @property
    def is_whole(self) -> bool:
        """True when this message holds every row of its snapshot (not a part of it)."""
        return self.rows_total is None or (self.row_offset == 0
                                           and len(self.sample_ids) == self.rows_total)


@declare(ChangeKind.EVENT)
@dataclass(frozen=True)
class Event(Declared):
    """Something that happened, for the run's event log (``payload`` is JSON-serialisable)."""

    run_id: RunId
    step: Count
    wall_time: Float
    event: Name
    message: Annotated[str, MaxLen(10_000)]
    payload: Json = field(default_factory=dict)


@declare(ChangeKind.STATUS)
@dataclass(frozen=True)
class Status(Declared):
    """The capture agent's own health: counters are totals since attach."""

    run_id: RunId
    step: Count
    dropped: Count
    spooled: Count
    overhead: Float
    snapshot_every: Count
    queue_depth: Count


@declare(ChangeKind.RUN_END)
@dataclass(frozen=True)
class RunEnd(Declared):
    """Closes a run."""

    run_id: RunId
    step: Count
    status: Literal[END_STATUSES]


Message = Union[RunStart, ProbeSet, Scalars, ScalarSeries, LayerStats, Snapshot, Event, Status,
                RunEnd]

#: Every message class by its wire ``kind``.
MESSAGE_TYPES: dict[str, type] = {
    cls.kind: cls
    for cls in (RunStart, ProbeSet, Scalars, ScalarSeries, LayerStats, Snapshot, Event, Status,
                RunEnd)
}
