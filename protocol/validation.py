"""Strict validation of messages, derived from their declarations in
:mod:`sentrycam.protocol.messages` (nothing here names a message's field).

Two entry points use the same rules:

- :func:`parse_frame` (server, each incoming frame): the frame is cut by
  :func:`~sentrycam.protocol.wire.split_frame`, its JSON header checked by a pydantic model
  built from the declarations (types, ranges, lengths, allowed values, unique names, the
  ``"nan"``/``"inf"``/``"-inf"`` spellings, int64 bounds), its arrays by the declared array
  rules (:mod:`~sentrycam.protocol.array_rules`) with exact dtypes; only then is the message
  rebuilt. Every problem becomes one :class:`FrameRejected` whose one-line text names the
  field and the problem.
- :func:`check_batch` (store, a batch built in process): each message's fields pass the same
  models and array rules; an array's dtype need only be of the declared kind (the store casts
  it), and a problem names the item and the field as Python spells it (``features['fc']``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import types
import typing
from collections import Counter
from typing import Annotated, Any, Literal, Optional, Sequence, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt,
                      StrictStr, TypeAdapter, ValidationError, create_model)

from sentrycam.protocol.array_rules import check_arrays, check_keys
from sentrycam.protocol.container import json_safe
from sentrycam.protocol.fields import Array, ArrayMap, KeysOf, Matches, Spans, Unique
from sentrycam.protocol.messages import (MESSAGE_TYPES, OLDEST_READ_VERSION, RUN_ID_RULE,
                                        SCHEMA_VERSION, Count, Message, RunId)
from sentrycam.protocol.wire import FrameError, build_message, message_parts, split_frame

_NONFINITE_WORDS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class FrameRejected(ValueError):
    """A frame the server will not store. ``seq`` and ``run_id`` are set when the header had
    usable values for them, so the error frame can say which message was refused."""

    def __init__(self, problem: str, *, seq: int | None = None, run_id: str | None = None):
        super().__init__(problem)
        self.seq = seq
        self.run_id = run_id


def is_valid_run_id(value: Any) -> bool:
    return RUN_ID_RULE(value)


# ---- declared types -> pydantic types ------------------------------------------------------

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


def _matching(rule: Matches) -> AfterValidator:
    def check(value: str) -> str:
        if not rule(value):
            raise ValueError(f"must be {rule.explain}")
        return value
    return AfterValidator(check)


_LEAVES: dict[Any, Any] = {int: StrictInt, str: StrictStr, Any: Any,
                           float: Annotated[float, BeforeValidator(_wire_float)]}


def _constraint(marker: Any) -> Any:
    """The pydantic form of one declared constraint (``annotated_types`` ones pass as is)."""
    if isinstance(marker, Matches):
        return _matching(marker)
    if isinstance(marker, Unique):
        return AfterValidator(_unique)
    return marker


def wire_type(declared: Any) -> Any:
    """The pydantic type that checks a declared field's value as a JSON header carries it:
    strict ints and strings, floats that may be spelled ``"nan"``, tuples as lists."""
    origin, args = typing.get_origin(declared), typing.get_args(declared)
    if origin is Annotated:
        meta = [_constraint(m) for m in declared.__metadata__
                if not isinstance(m, (Array, ArrayMap, KeysOf, Spans))]
        return Annotated[(wire_type(args[0]), *meta)] if meta else wire_type(args[0])
    if declared in _LEAVES:
        return _LEAVES[declared]
    if origin is Literal:
        return declared
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return Optional[wire_type(next(a for a in args if a is not type(None)))]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return list[wire_type(args[0])]
    if origin in (dict, collections.abc.Mapping):
        return dict[wire_type(args[0]), wire_type(args[1])]
    raise TypeError(f"no wire form for the declared type {declared!r}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _default(field: dataclasses.Field) -> Any:
    """A message field's default as the body model's (``...``: the header must give it), so
    that a header may leave out what an older sender did not know."""
    if field.default_factory is not dataclasses.MISSING:
        return Field(default_factory=field.default_factory)
    return ... if field.default is dataclasses.MISSING else Field(field.default)


def _body_model(cls: type) -> type[BaseModel]:
    """The header's "body" of one kind: every field but run_id; a mapping of arrays travels
    as the list of its names."""
    defaults = {f.name: _default(f) for f in dataclasses.fields(cls)}
    fields: dict[str, Any] = {}
    for spec in cls.schema.fields:
        if spec.name == "run_id" or isinstance(spec.array, Array):
            continue
        if isinstance(spec.array, ArrayMap):
            key_type = typing.get_args(spec.base)[0]
            declared = Annotated[tuple[key_type, ...], Unique()]
        else:
            declared = spec.annotation
        fields[spec.name] = (wire_type(declared), defaults[spec.name])
    return create_model(f"{cls.__name__}Body", __base__=_Strict, **fields)


WireRunId, WireCount, WireFloat = wire_type(RunId), wire_type(Count), wire_type(float)


class FrameHeader(_Strict):
    """Fields every header has; one subclass per kind fixes ``body``."""

    v: StrictInt
    kind: StrictStr
    run_id: WireRunId
    seq: WireCount
    time: WireFloat
    body: Any


BODY_MODELS: dict[str, type[BaseModel]] = {kind: _body_model(cls)
                                           for kind, cls in MESSAGE_TYPES.items()}


def _header_model(kind: str, body: type[BaseModel]) -> type[FrameHeader]:
    """The header of one kind; a body without required fields may be left out."""
    optional = not any(f.is_required() for f in body.model_fields.values())
    default = Field(default_factory=body) if optional else ...
    return create_model(f"{MESSAGE_TYPES[kind].__name__}Header", __base__=FrameHeader,
                        body=(body, default))


HEADER_MODELS: dict[str, type[FrameHeader]] = {kind: _header_model(kind, body)
                                               for kind, body in BODY_MODELS.items()}
_SEQ, _RUN_ID = TypeAdapter(WireCount), TypeAdapter(WireRunId)


# ---- errors ----------------------------------------------------------------------------------

def describe_validation_error(exc: ValidationError, limit: int = 3, root: str = "header") -> str:
    """Condense pydantic's report to one line: ``field value: problem; ...`` (``root`` names
    what was validated when the problem is with the whole of it)."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or root
        message = error["msg"].removeprefix("Value error, ")
        got = repr(error.get("input"))
        shown = "" if error["type"] == "missing" else (
            f" {got[:40]}{'...' if len(got) > 40 else ''}")
        parts.append(f"{where}{shown}: {message}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


# ---- entry points ----------------------------------------------------------------------------

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
    if not (isinstance(version, int) and OLDEST_READ_VERSION <= version <= SCHEMA_VERSION):
        side = "server" if isinstance(version, int) and version > SCHEMA_VERSION else "trainer"
        raise reject(f"message schema version {version!r} is not supported (this server reads "
                     f"versions {OLDEST_READ_VERSION}-{SCHEMA_VERSION}); upgrade sentrycam on "
                     f"the {side} side")
    kind = header.get("kind")
    model = HEADER_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise reject(f"unknown message kind {kind!r}; known: {sorted(map(str, HEADER_MODELS))}")
    schema = MESSAGE_TYPES[kind].schema
    try:
        validated = model.model_validate(header)
        body = validated.body.model_dump()
        check_keys(schema, body)
        check_arrays(schema, body, arrays, exact=True)
        # Rebuilt from the validated body, so numbers arrive as the types the models promise.
        message = build_message({**header, "body": body}, arrays)
    except ValidationError as exc:
        raise reject(f"invalid {kind} frame: {describe_validation_error(exc)}") from None
    except ValueError as exc:  # FrameError included
        raise reject(f"invalid {kind} frame: {exc}") from None
    return validated.seq, message


def _python_name(frame_name: str) -> str:
    """``features/fc`` -> ``features['fc']``: how the message's own field is written."""
    field, _, key = frame_name.partition("/")
    return f"{field}[{key!r}]" if key else field


def check_message(message: Message) -> None:
    """Raise ValueError naming the first field of an in-process message that breaks its
    declaration (the rules of :func:`parse_frame`, dtypes by kind only)."""
    schema = type(message).schema
    body, arrays = message_parts(message)
    try:
        _RUN_ID.validate_python(message.run_id)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc, root="run_id")) from None
    try:
        body = BODY_MODELS[schema.kind].model_validate(json_safe(body)).model_dump()
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None
    check_keys(schema, body)
    check_arrays(schema, body, arrays, exact=False, label=_python_name)


def check_batch(batch: Sequence[tuple[int, Message]]) -> None:
    """Check a batch of ``(seq, message)`` before anything of it is stored: raise ValueError
    naming the first bad item (its index, kind, run and seq) and its problem."""
    classes = tuple(MESSAGE_TYPES.values())
    for index, item in enumerate(batch):
        if not isinstance(item, tuple) or len(item) != 2:
            raise ValueError(f"batch item {index} must be a (seq, message) tuple, got {item!r:.80}")
        seq, message = item
        if not isinstance(message, classes):
            raise ValueError(f"batch item {index} holds a {type(message).__name__}, not a "
                             "sentrycam message; build messages from sentrycam.protocol.messages")
        try:
            _SEQ.validate_python(json_safe(seq))
        except ValidationError:
            raise ValueError(f"batch item {index}: seq must be an int >= 0, got {seq!r}") from None
        try:
            check_message(message)
        except ValueError as exc:
            raise ValueError(f"batch item {index} ({message.kind} for run {message.run_id!r}, "
                             f"seq {seq}): {exc}; fix the sender, the whole batch is refused "
                             "and nothing of it stored") from None


__all__ = ["FrameRejected", "FrameHeader", "HEADER_MODELS", "BODY_MODELS", "parse_frame",
           "check_message", "check_batch", "describe_validation_error", "is_valid_run_id"]
