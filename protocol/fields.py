"""How a message field declares what it may hold, and the schema read off those declarations.

A message field is declared once, in :mod:`sentrycam.protocol.messages`, as
``Annotated[type, *constraints]``: ``annotated_types`` bounds (``Ge``, ``Le``, ``MinLen``,
``MaxLen``) and the markers below. :func:`declare` reads a message class's declarations once,
when the class is made, into a :class:`MessageSchema`; the codec and the validators work from
that schema, so a field is never described twice. Nothing here checks values (that is
:mod:`sentrycam.protocol.validation`, on the server) and nothing here imports pydantic.

Array shape rules, one string per axis:

- ``"N"``: a named length, the same in every array of the message that names it;
- ``"len(layers)"``: the length of the header field ``layers``;
- a ``">0"`` suffix (``"D>0"``): the length must be at least 1.

An :class:`Array` may also bound its first axis (``max_rows``) and demand values that rise
strictly from a ``minimum`` (``increasing``: steps in order).

Inside an :class:`ArrayMap` a name not bound by a plain array field (``"D"``) is bound per key.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

INT64_MAX = 2**63 - 1

#: One axis of a shape rule: a name or ``len(field)``, optionally ``>0``.
AXIS = re.compile(r"(?:(?P<name>[A-Za-z]\w*)|len\((?P<field>\w+)\))(?P<positive>>0)?")


@dataclass(frozen=True)
class Matches:
    """A string that matches ``pattern`` in full; ``explain`` says so to a person."""

    pattern: str
    explain: str

    def __call__(self, value: Any) -> bool:
        return isinstance(value, str) and re.fullmatch(self.pattern, value) is not None


@dataclass(frozen=True)
class Unique:
    """A sequence of names none of which repeats."""


@dataclass(frozen=True)
class KeysOf:
    """A mapping whose keys are all among the keys of the message's mapping ``field``."""

    field: str


@dataclass(frozen=True)
class Spans:
    """An optional count of the rows a message is one part of: at least the message's
    ``offset`` field plus its own ``axis`` length (its rows are ``offset .. offset + axis``).
    None means the message holds every row itself, so its ``offset`` must be 0."""

    offset: str
    axis: str


def _check_axes(shape: tuple[str, ...]) -> None:
    bad = [axis for axis in shape if not AXIS.fullmatch(axis)]
    if bad:
        raise ValueError(f"shape rule {shape!r} has axes {bad} that are not NAME, len(FIELD) "
                         "or either with >0")


@dataclass(frozen=True)
class Array:
    """A field holding one array: its dtype (numpy little-endian code, as framed), its shape
    rule, whether its values must be unique, the only values allowed (value -> meaning), the
    most rows (length of the first axis) it may have, and whether its values must rise strictly
    from ``minimum``."""

    dtype: str
    shape: tuple[str, ...]
    unique: bool = False
    allowed: Mapping[int, str] | None = None
    max_rows: int | None = None
    increasing: bool = False
    minimum: int | None = None

    def __post_init__(self) -> None:
        _check_axes(self.shape)

    def dtypes_for(self, key: str | None = None) -> tuple[str, ...]:
        return (self.dtype,)


@dataclass(frozen=True)
class ArrayMap:
    """A field mapping names to arrays, framed as ``"<field>/<name>"``: the dtypes any key may
    have, those of known keys (``by_key``), and the shape rule of every array."""

    dtypes: tuple[str, ...]
    shape: tuple[str, ...]
    by_key: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_axes(self.shape)

    def dtypes_for(self, key: str | None = None) -> tuple[str, ...]:
        return (self.by_key[key],) if key in self.by_key else self.dtypes


@dataclass(frozen=True)
class FieldSpec:
    """One declared field: its name, its annotation (``Annotated`` kept), its array marker if
    it is framed as arrays, and whether the message gives it a default."""

    name: str
    annotation: Any
    array: Array | ArrayMap | None
    has_default: bool

    def marker(self, kind: type) -> Any:
        """The field's first constraint of class ``kind``, or None."""
        return next((m for m in getattr(self.annotation, "__metadata__", ())
                     if isinstance(m, kind)), None)

    @property
    def base(self) -> Any:
        """The declared type without its constraints (``tuple[str, ...]`` for ``Names``)."""
        if typing.get_origin(self.annotation) is typing.Annotated:
            return typing.get_args(self.annotation)[0]
        return self.annotation

    @property
    def is_tuple(self) -> bool:
        """Declared as a tuple (a JSON list in a frame, a tuple in the message)."""
        return typing.get_origin(self.base) is tuple


@dataclass(frozen=True)
class MessageSchema:
    """Every field of one message kind, in declaration order."""

    kind: str
    fields: tuple[FieldSpec, ...]

    @property
    def arrays(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if isinstance(f.array, Array))

    @property
    def array_maps(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if isinstance(f.array, ArrayMap))

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)


class Declared:
    """Base of the message classes; :func:`declare` fills these from the field declarations.

    ``kind`` names the message on the wire; ``change`` is the kind of change storing it makes
    (the same but where two messages carry one kind of data, as Scalars and ScalarSeries)."""

    kind: ClassVar[str] = ""
    change: ClassVar[str] = ""
    #: Fields that hold one array each, and fields that map names to arrays.
    array_fields: ClassVar[tuple[str, ...]] = ()
    array_map_fields: ClassVar[tuple[str, ...]] = ()
    schema: ClassVar[MessageSchema]


def declare(change: str, *, kind: str | None = None):
    """Class decorator: read a message dataclass's field declarations into its ``schema``.
    ``change``: the change kind the message makes; ``kind``: its wire name (default
    ``change``)."""

    def read(cls: type) -> type:
        hints = typing.get_type_hints(cls, include_extras=True)
        specs = []
        for f in dataclasses.fields(cls):
            annotation = hints[f.name]
            array = next((m for m in getattr(annotation, "__metadata__", ())
                          if isinstance(m, (Array, ArrayMap))), None)
            has_default = (f.default is not dataclasses.MISSING
                           or f.default_factory is not dataclasses.MISSING)
            specs.append(FieldSpec(f.name, annotation, array, has_default))
        cls.kind = change if kind is None else kind
        cls.change = change
        cls.schema = MessageSchema(cls.kind, tuple(specs))
        cls.array_fields = tuple(f.name for f in cls.schema.arrays)
        cls.array_map_fields = tuple(f.name for f in cls.schema.array_maps)
        return cls

    return read
