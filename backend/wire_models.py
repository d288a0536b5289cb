"""Strict validation of incoming frames before anything reaches the store.

A frame (see :mod:`sentrycam.capture.wire`) is cut by ``split_frame``; its JSON header is then
checked by one pydantic model per message kind (types, ranges, names), and its arrays by rules
per kind (required names, dtypes, shapes that agree with each other). Only then is the message
dataclass rebuilt. Every problem becomes one :class:`FrameRejected` whose text names the field
and what was expected, so a writer that sends bad frames learns why from the error frame.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Annotated, Any, Literal, Mapping

import numpy as np
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt,
                      StrictStr, ValidationError)

from sentrycam.protocol.messages import MESSAGE_TYPES, SCHEMA_VERSION, SPLIT_HELDOUT, SPLIT_TRAIN
from sentrycam.protocol.messages import Message
from sentrycam.capture.wire import FrameError, build_message, split_frame

RUN_ID_MAX = 64
NAME_MAX = 200
INT64_MAX = 2**63 - 1
_RUN_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_NONFINITE_WORDS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class FrameRejected(ValueError):
    """A frame the server will not store. ``seq`` and ``run_id`` are set when the header had
    usable values for them, so the error frame can say which message was refused."""

    def __init__(self, problem: str, *, seq: int | None = None, run_id: str | None = None):
        super().__init__(problem)
        self.seq = seq
        self.run_id = run_id


def is_valid_run_id(value: Any) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= RUN_ID_MAX
            and set(value) <= _RUN_ID_CHARS)


def _check_run_id(value: str) -> str:
    if not is_valid_run_id(value):
        raise ValueError(f"run_id must be 1-{RUN_ID_MAX} characters of A-Z a-z 0-9 _ -")
    return value


def _wire_float(value: Any) -> Any:
    """Numbers pass; the header's spellings of NaN/Inf become floats; anything else fails."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in _NONFINITE_WORDS:
        return _NONFINITE_WORDS[value]
    raise ValueError('expected a number (or "nan", "inf", "-inf")')


def _unique(values: list[str]) -> list[str]:
    duplicates = sorted(name for name, count in Counter(values).items() if count > 1)
    if duplicates:
        raise ValueError(f"names must be unique; repeated: {duplicates}")
    return values


RunId = Annotated[StrictStr, AfterValidator(_check_run_id)]
WireFloat = Annotated[float, BeforeValidator(_wire_float)]
Count = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]  # seq, step, counters: BIGINT columns
Name = Annotated[StrictStr, Field(min_length=1, max_length=NAME_MAX)]
UniqueNames = Annotated[list[Name], AfterValidator(_unique)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArraySpec(_Strict):
    """One array of the payload as the header announces it (``split_frame`` checked the bytes)."""

    name: StrictStr
    dtype: StrictStr
    shape: list[Count]


# ---- bodies: the header's "body" object, one model per message kind -------------------------

class RunStartBody(_Strict):
    name: Annotated[StrictStr, Field(max_length=NAME_MAX)]
    started_at: WireFloat
    config: dict[str, Any] = Field(default_factory=dict)


class ProbeBody(_Strict):
    pass


class ScalarsBody(_Strict):
    step: Count
    wall_time: WireFloat
    values: dict[Name, WireFloat]


class LayerStatsBody(_Strict):
    step: Count
    layers: Annotated[UniqueNames, Field(min_length=1)]
    stats: Annotated[UniqueNames, Field(min_length=1)]


class SnapshotBody(_Strict):
    step: Count
    epoch: Annotated[StrictInt, Field(ge=-1)]  # -1 when the trainer has no notion of epochs
    outputs: UniqueNames
    features: UniqueNames
    nonfinite: dict[Name, Count] = Field(default_factory=dict)


class EventBody(_Strict):
    step: Count
    wall_time: WireFloat
    event: Name
    message: Annotated[StrictStr, Field(max_length=10_000)]
    payload: dict[str, Any] = Field(default_factory=dict)


class StatusBody(_Strict):
    step: Count
    dropped: Count
    spooled: Count
    overhead: WireFloat
    snapshot_every: Count
    queue_depth: Count


class RunEndBody(_Strict):
    step: Count
    status: Literal["finished", "detached", "failed"]


# ---- headers ----------------------------------------------------------------------------------

class FrameHeader(_Strict):
    """Fields every header has; subclasses fix ``body`` and the array rules of their kind."""

    v: StrictInt
    kind: StrictStr
    run_id: RunId
    seq: Count
    time: WireFloat
    body: Any
    arrays: list[ArraySpec] = Field(default_factory=list)

    def check_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Raise ValueError naming the first array that does not fit this kind."""
        _expect_names(arrays, set())


class RunStartHeader(FrameHeader):
    body: RunStartBody


class ScalarsHeader(FrameHeader):
    body: ScalarsBody


class EventHeader(FrameHeader):
    body: EventBody


class StatusHeader(FrameHeader):
    body: StatusBody


class RunEndHeader(FrameHeader):
    body: RunEndBody


class ProbeHeader(FrameHeader):
    body: ProbeBody = Field(default_factory=ProbeBody)

    def check_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        _expect_names(arrays, {"sample_ids", "labels", "split"})
        n = _vector(arrays, "sample_ids", "<i8", None)
        if n == 0:
            raise ValueError("probe set is empty: send at least one probe sample")
        _vector(arrays, "labels", "<i8", n)
        _vector(arrays, "split", "|u1", n)
        _require_unique_ids(arrays["sample_ids"])
        bad = np.setdiff1d(np.unique(arrays["split"]), [SPLIT_TRAIN, SPLIT_HELDOUT])
        if bad.size:
            raise ValueError(f"split values must be {SPLIT_TRAIN} (train) or {SPLIT_HELDOUT} "
                             f"(held out); got {bad[:5].tolist()}")


class LayerStatsHeader(FrameHeader):
    body: LayerStatsBody

    def check_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        _expect_names(arrays, {"values"})
        expected = (len(self.body.layers), len(self.body.stats))
        _check_array(arrays, "values", {"<f4"}, expected)


#: dtypes a snapshot output may have; known outputs have exactly one.
_OUTPUT_DTYPES = {"pred": {"<i8"}, "confidence": {"<f4"}, "loss": {"<f4"},
                  "entropy": {"<f4"}, "margin": {"<f4"}}
_OTHER_OUTPUT_DTYPES = {"<f4", "<f8", "<i8", "<i4", "|u1", "|b1"}


class SnapshotHeader(FrameHeader):
    body: SnapshotBody

    def check_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        outputs = {f"outputs/{name}": name for name in self.body.outputs}
        features = {f"features/{name}": name for name in self.body.features}
        _expect_names(arrays, {"sample_ids", *outputs, *features})
        n = _vector(arrays, "sample_ids", "<i8", None)
        _require_unique_ids(arrays["sample_ids"])
        for key, name in outputs.items():
            _check_array(arrays, key, _OUTPUT_DTYPES.get(name, _OTHER_OUTPUT_DTYPES), (n,))
        for key in features:
            _check_array(arrays, key, {"<f2"}, (n, None))
            if arrays[key].shape[1] == 0:
                raise ValueError(f"array {key!r} has no feature columns (shape {arrays[key].shape})")
        unknown = sorted(set(self.body.nonfinite) - set(self.body.features))
        if unknown:
            raise ValueError(f"nonfinite counts name layers without features: {unknown}")


HEADER_MODELS: dict[str, type[FrameHeader]] = {
    "run_start": RunStartHeader, "probe": ProbeHeader, "scalars": ScalarsHeader,
    "layer_stats": LayerStatsHeader, "snapshot": SnapshotHeader, "event": EventHeader,
    "status": StatusHeader, "run_end": RunEndHeader,
}
assert set(HEADER_MODELS) == set(MESSAGE_TYPES), "every message kind needs a header model"


# ---- array rules ------------------------------------------------------------------------------

def _expect_names(arrays: Mapping[str, np.ndarray], expected: set[str]) -> None:
    missing = sorted(expected - set(arrays))
    if missing:
        raise ValueError(f"missing arrays {missing}")
    extra = sorted(set(arrays) - expected)
    if extra:
        raise ValueError(f"unexpected arrays {extra} (expected {sorted(expected) or 'none'})")


def _check_array(arrays: Mapping[str, np.ndarray], name: str, dtypes: set[str],
                 shape: tuple[int | None, ...]) -> None:
    """``shape`` entries of None accept any length on that axis."""
    array = arrays[name]
    if array.dtype.str not in dtypes:
        raise ValueError(f"array {name!r} has dtype {array.dtype.str}; expected {sorted(dtypes)}")
    fits = array.ndim == len(shape) and all(want is None or got == want
                                            for got, want in zip(array.shape, shape))
    if not fits:
        wanted = "[" + ", ".join("any" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"array {name!r} has shape {list(array.shape)}; expected {wanted}")


def _vector(arrays: Mapping[str, np.ndarray], name: str, dtype: str, length: int | None) -> int:
    """Check a 1-D array and return its length."""
    _check_array(arrays, name, {dtype}, (length,))
    return int(arrays[name].shape[0])


def _require_unique_ids(sample_ids: np.ndarray) -> None:
    values, counts = np.unique(sample_ids, return_counts=True)
    if values.size != sample_ids.size:
        raise ValueError(f"sample_ids must be unique; repeated: {values[counts > 1][:5].tolist()}")


# ---- entry point ------------------------------------------------------------------------------

def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """Condense pydantic's report to one line: ``field: problem (got value); ...``."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "header"
        message = error["msg"].removeprefix("Value error, ")
        got = repr(error.get("input"))
        shown = f" (got {got[:40]}{'...' if len(got) > 40 else ''})" if error["type"] not in (
            "missing", "value_error") else ""
        parts.append(f"{where}: {message}{shown}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_frame(data: bytes) -> tuple[int, Message]:
    """Validate one binary frame and rebuild its message.

    Returns ``(seq, message)``. Raises :class:`FrameRejected` naming the problem.
    """
    try:
        header, arrays = split_frame(data)
    except FrameError as exc:
        raise FrameRejected(str(exc)) from None
    seq = header.get("seq")
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else None
    run_id = header.get("run_id") if is_valid_run_id(header.get("run_id")) else None

    def reject(problem: str) -> FrameRejected:
        return FrameRejected(problem, seq=seq, run_id=run_id)

    version = header.get("v")
    if version != SCHEMA_VERSION:
        side = "server" if isinstance(version, int) and version > SCHEMA_VERSION else "trainer"
        raise reject(f"message schema version {version!r} is not supported (this server speaks "
                     f"version {SCHEMA_VERSION}); upgrade sentrycam on the {side} side")
    kind = header.get("kind")
    model = HEADER_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise reject(f"unknown message kind {kind!r}; known: {sorted(HEADER_MODELS)}")
    names = [spec.get("name") for spec in header.get("arrays", []) if isinstance(spec, dict)]
    if len(names) != len(set(names)):
        raise reject(f"{kind} frame lists an array name twice")
    try:
        validated = model.model_validate(header)
        validated.check_arrays(arrays)
        # Rebuild from the validated body so numbers arrive as the types the models promise.
        message = build_message({**header, "body": validated.body.model_dump()}, arrays)
    except ValidationError as exc:
        raise reject(f"invalid {kind} frame: {describe_validation_error(exc)}") from None
    except (ValueError, FrameError) as exc:
        raise reject(f"invalid {kind} frame: {exc}") from None
    return validated.seq, message


__all__ = ["FrameRejected", "FrameHeader", "HEADER_MODELS", "parse_frame",
           "describe_validation_error", "is_valid_run_id"]
