"""Push frames: what the server's push hub sends to dashboards, one typed header per frame type.

A push frame is a :mod:`~sentrycam.protocol.container` frame of :data:`PUSH_FORMAT` (magic
``b"SCPF"``): a JSON header ``{"type": ..., "run_id": ..., <fields>, "arrays": [...]}`` and
packed numpy arrays. Points travel as packed arrays, never as one JSON object per point:
2,000 probe samples' coordinates are 16 kB of float32.

Each :class:`PushType` has one header model below that declares its fields (pydantic) and its
arrays (:class:`ArraySpec`: name, dtype, shape). :func:`encode` refuses a frame that does not
fit its declaration (a bug on the server) and :func:`decode` refuses bytes that do not (with a
:class:`PushFrameError` naming the problem), so both sides read the same schema from here.

Shapes name their dimensions: an ``int`` is a fixed size; a string that names one of the
header's list fields is that list's length (``"classes"``); any other string (``"N"``) is a
size that must be the same for every array of the frame that names it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Mapping, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from sentrycam.protocol import messages
from sentrycam.protocol.validation import describe_validation_error
from sentrycam.protocol.container import (JS_NONFINITE, ContainerError, ContainerFormat,
                                          json_safe, pack, unpack)


class PushFrameError(ContainerError):
    """Bytes that are not a valid push frame, or a frame that does not fit its declaration."""


class PushType(str, Enum):
    """The types of push frame."""

    RUN = "run"
    PROBE = "probe"
    SCALARS = "scalars"
    LAYER_STATS = "layer_stats"
    SNAPSHOTS = "snapshots"
    EMBEDDING_INDEX = "embedding_index"
    EMBEDDING = "embedding"
    HEALTH = "health"
    QUALITY = "quality"
    ALERTS = "alerts"
    STATUS = "status"
    PROJECTOR = "projector"
    EVENT = "event"
    CAUGHT_UP = "caught_up"
    DROPPED = "dropped"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ArraySpec:
    """One array a frame type carries: ``dtype`` as numpy spells it little-endian (``"<f4"``),
    ``shape`` one entry per dimension (see the module docstring)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


class PushHeader(BaseModel):
    """Fields every push frame has. Subclasses set ``type``, add fields and declare ``ARRAYS``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ClassVar[PushType]
    ARRAYS: ClassVar[tuple[ArraySpec, ...]] = ()

    run_id: str


class RunHeader(PushHeader):
    """The run as the store summarises it (name, status, last_step, dropped, ...)."""

    type: ClassVar[PushType] = PushType.RUN
    summary: dict[str, Any]


class ProbeHeader(PushHeader):
    """The run's probe samples: their ids, labels (-1: unknown) and split codes."""

    type: ClassVar[PushType] = PushType.PROBE
    ARRAYS = (ArraySpec("sample_id", "<i8", ("N",)), ArraySpec("label", "<i8", ("N",)),
              ArraySpec("split", "|u1", ("N",)))


class ScalarsHeader(PushHeader):
    """Scalar rows: ``name`` codes index ``names``; ``value`` NaN where none was logged."""

    type: ClassVar[PushType] = PushType.SCALARS
    ARRAYS = (ArraySpec("step", "<i8", ("R",)), ArraySpec("name", "<i4", ("R",)),
              ArraySpec("value", "<f8", ("R",)))
    names: list[str]


class LayerStatsHeader(PushHeader):
    """Per-layer statistic rows: ``layer`` codes index ``layers``, ``stat`` codes ``stats``."""

    type: ClassVar[PushType] = PushType.LAYER_STATS
    ARRAYS = (ArraySpec("step", "<i8", ("R",)), ArraySpec("layer", "<i4", ("R",)),
              ArraySpec("stat", "<i4", ("R",)), ArraySpec("value", "<f8", ("R",)))
    layers: list[str]
    stats: list[str]


class SnapshotsHeader(PushHeader):
    """Every snapshot step stored so far; sent on connect and per new snapshot."""

    type: ClassVar[PushType] = PushType.SNAPSHOTS
    steps: list[int]


class EmbeddingIndexHeader(PushHeader):
    """Every stored 2D map: (step, layer, number of points)."""

    type: ClassVar[PushType] = PushType.EMBEDDING_INDEX
    entries: list[tuple[int, str, int]]


class MapHealth(BaseModel):
    """Cluster health of one 2D map: intra-class variance, inter-class distance, the probe's
    classes and each class's spread (NaN where a value cannot be computed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intra: float
    inter: float
    classes: list[int]
    spread: list[float]


class EmbeddingHeader(PushHeader):
    """The 2D map of ``layer`` at ``step`` with the model's outputs at that step: ``pred``
    -1 and ``confidence``/``loss`` NaN where unknown."""

    type: ClassVar[PushType] = PushType.EMBEDDING
    ARRAYS = (ArraySpec("sample_id", "<i8", ("N",)), ArraySpec("xy", "<f4", ("N", 2)),
              ArraySpec("pred", "<i8", ("N",)), ArraySpec("confidence", "<f4", ("N",)),
              ArraySpec("loss", "<f4", ("N",)))
    step: int
    layer: str
    health: MapHealth


class HealthHeader(PushHeader):
    """Cluster health of ``layer``'s stored maps: one row per map step, ``spread`` per class."""

    type: ClassVar[PushType] = PushType.HEALTH
    ARRAYS = (ArraySpec("step", "<i8", ("S",)), ArraySpec("intra", "<f8", ("S",)),
              ArraySpec("inter", "<f8", ("S",)), ArraySpec("spread", "<f8", ("S", "classes")))
    layer: str
    classes: list[int]


class QualityHeader(PushHeader):
    """Projection quality rows: (step, layer, metric, value)."""

    type: ClassVar[PushType] = PushType.QUALITY
    rows: list[tuple[int, str, str, float]]


class AlertsHeader(PushHeader):
    """Every alert of the run, as the store lists them."""

    type: ClassVar[PushType] = PushType.ALERTS
    alerts: list[dict[str, Any]]


class ProjectorHeader(PushHeader):
    """What the projector worker published (its state, or a problem with one job)."""

    type: ClassVar[PushType] = PushType.PROJECTOR
    state: dict[str, Any]


class CaughtUpHeader(PushHeader):
    """End of the catch-up that opens every subscription."""

    type: ClassVar[PushType] = PushType.CAUGHT_UP


class DroppedHeader(PushHeader):
    """``count`` frames this subscriber lost so far because it read too slowly."""

    type: ClassVar[PushType] = PushType.DROPPED
    count: int


def _header_of_message(name: str, push_type: PushType, message: type) -> type[PushHeader]:
    """A header carrying every field of a trainer message (``run_id`` is the header's own),
    so a field added to the message travels without a second declaration here."""
    hints = typing.get_type_hints(message)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(message):
        if field.name == "run_id":
            continue
        default = (Field(default_factory=field.default_factory)
                   if field.default_factory is not dataclasses.MISSING
                   else ... if field.default is dataclasses.MISSING else field.default)
        fields[field.name] = (hints[field.name], default)
    model = create_model(name, __base__=PushHeader, __doc__=message.__doc__, **fields)
    model.type = push_type
    return model


#: The capture agent's counters (:class:`~sentrycam.protocol.messages.Status`'s fields).
StatusHeader = _header_of_message("StatusHeader", PushType.STATUS, messages.Status)
#: One event of the run (:class:`~sentrycam.protocol.messages.Event`'s fields).
EventHeader = _header_of_message("EventHeader", PushType.EVENT, messages.Event)

HEADER_MODELS: dict[PushType, type[PushHeader]] = {model.type: model for model in (
    RunHeader, ProbeHeader, ScalarsHeader, LayerStatsHeader, SnapshotsHeader,
    EmbeddingIndexHeader, EmbeddingHeader, HealthHeader, QualityHeader, AlertsHeader,
    StatusHeader, ProjectorHeader, EventHeader, CaughtUpHeader, DroppedHeader)}
if set(HEADER_MODELS) != set(PushType):  # not assert: must hold under python -O too
    raise TypeError(f"push types without a header model: {set(PushType) - set(HEADER_MODELS)}")

#: The push frame container: what the declarations above can carry, and the decoder's bounds.
#: The largest headers are a long run's catch-up (every alert with its evidence, every quality
#: row): a few MB. The bound keeps a hostile or broken peer from making a client parse more.
#: Depth: a run frame carries the trainer's config as ingest accepted it, two levels down.
PUSH_FORMAT = ContainerFormat(
    name="push", magic=b"SCPF", version=2,
    dtypes=frozenset(a.dtype for m in HEADER_MODELS.values() for a in m.ARRAYS),
    max_header_bytes=16 * 1024 * 1024,
    max_arrays=max(len(m.ARRAYS) for m in HEADER_MODELS.values()),
    max_ndim=max(len(a.shape) for m in HEADER_MODELS.values() for a in m.ARRAYS),
    max_depth=ContainerFormat.max_depth + 8, error=PushFrameError)


class PushFrame(NamedTuple):
    """A decoded frame: its typed header and its arrays (read-only views into the frame)."""

    header: PushHeader
    arrays: dict[str, np.ndarray]


def encode(header: PushHeader, arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    """The bytes of one frame. Raises PushFrameError when ``arrays`` do not match what
    ``header``'s type declares (names, dtypes, shapes)."""
    arrays = {name: _little_endian(np.asarray(array)) for name, array in (arrays or {}).items()}
    check_arrays(header, arrays)
    fields = json_safe(header.model_dump(), JS_NONFINITE)
    return pack(PUSH_FORMAT, {"type": header.type.value, **fields}, arrays)


def decode(frame: bytes | bytearray | memoryview) -> PushFrame:
    """The typed header and arrays of a frame. Raises PushFrameError naming the first
    problem: not a push frame, truncated, over the format's bounds, an unknown type, header
    fields or arrays that do not fit the type's declaration."""
    raw, arrays = unpack(PUSH_FORMAT, frame)
    kind = raw.pop("type", None)
    try:
        model = HEADER_MODELS[PushType(kind)]
    except (ValueError, TypeError):
        raise PushFrameError(f"unknown push frame type {kind!r}; known: "
                             f"{sorted(t.value for t in PushType)}") from None
    try:
        header = model.model_validate(raw)
    except ValidationError as exc:
        raise PushFrameError(f"invalid {kind} frame: {describe_validation_error(exc)}") from None
    check_arrays(header, arrays)
    return PushFrame(header, arrays)


def check_arrays(header: PushHeader, arrays: Mapping[str, np.ndarray]) -> None:
    """Raise PushFrameError unless ``arrays`` are exactly the ones ``header``'s type declares,
    each with its dtype and with sizes that agree (see the module docstring)."""
    declared = [spec.name for spec in header.ARRAYS]
    if sorted(arrays) != sorted(declared):
        raise PushFrameError(f"a {header.type} frame carries arrays {declared}, "
                             f"not {sorted(arrays)}")
    sizes: dict[str, int] = {}
    for spec in header.ARRAYS:
        array = arrays[spec.name]
        if array.dtype.str != spec.dtype or array.ndim != len(spec.shape):
            raise PushFrameError(f"array {spec.name!r} of a {header.type} frame is "
                                 f"{array.dtype.str} {list(array.shape)}; declared "
                                 f"{spec.dtype} {list(spec.shape)}")
        for dim, size in zip(spec.shape, array.shape):
            expected = _expected_size(header, dim, sizes)
            if expected is None:
                sizes[str(dim)] = size
            elif size != expected:
                raise PushFrameError(f"array {spec.name!r} of a {header.type} frame has shape "
                                     f"{list(array.shape)}; {dim} must be {expected}")


def _expected_size(header: PushHeader, dim: int | str, sizes: Mapping[str, int]) -> int | None:
    """What a dimension must measure: fixed, a header list's length, or the size its symbol
    took in an earlier array of the frame (None: first use of the symbol)."""
    if isinstance(dim, int):
        return dim
    if dim in type(header).model_fields:
        return len(getattr(header, dim))
    return sizes.get(dim)


def _little_endian(array: np.ndarray) -> np.ndarray:
    return array.astype(array.dtype.newbyteorder("<")) if array.dtype.byteorder == ">" else array
