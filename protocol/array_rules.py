"""The rules a message's arrays and cross-field references obey, read off the declarations
(:class:`~sentrycam.protocol.fields.Array`, :class:`~sentrycam.protocol.fields.ArrayMap`,
:class:`~sentrycam.protocol.fields.KeysOf`). Used by :mod:`sentrycam.protocol.validation` for
frames (exact dtypes) and for in-process messages (dtypes by kind). Numpy only.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from sentrycam.protocol.fields import AXIS, Array, ArrayMap, KeysOf, MessageSchema, Spans


def check_keys(schema: MessageSchema, body: Mapping[str, Any]) -> None:
    """Raise ValueError if a mapping names keys its ``KeysOf`` field lacks."""
    for spec in schema.fields:
        rule = spec.marker(KeysOf)
        if rule is not None:
            unknown = sorted(set(body.get(spec.name) or ()) - set(body.get(rule.field) or ()))
            if unknown:
                raise ValueError(f"{spec.name} names {unknown}, which {rule.field} lacks")


def check_arrays(schema: MessageSchema, body: Mapping[str, Any], arrays: Mapping[str, Any], *,
                 exact: bool, label: Callable[[str], str] = str) -> None:
    """Raise ValueError naming the first array that breaks its declaration.

    ``body``: the message's plain fields (a mapping of arrays as its list of names);
    ``arrays``: by frame name (``"features/fc"``). ``exact`` demands the declared dtype (a
    frame); otherwise the declared kind (integer, float, bool) suffices. ``label`` turns a
    frame name into the name a problem shows.
    """
    expected = [f.name for f in schema.arrays] + [
        f"{f.name}/{key}" for f in schema.array_maps for key in body.get(f.name, ())]
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise ValueError(f"missing arrays {missing}")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise ValueError(f"unexpected arrays {extra} (expected {sorted(expected) or 'none'})")
    bound: dict[str, int] = {}
    for spec in schema.arrays:
        _check_array(label(spec.name), arrays[spec.name], spec.array, None, bound, body, exact)
    for spec in schema.array_maps:
        for key in body.get(spec.name, ()):
            name = f"{spec.name}/{key}"
            _check_array(label(name), arrays[name], spec.array, key, dict(bound), body, exact)
    _check_spans(schema, body, bound)


def _check_spans(schema: MessageSchema, body: Mapping[str, Any], bound: Mapping[str, int]
                 ) -> None:
    """A part's rows must lie within the total it names (see :class:`Spans`)."""
    for spec in schema.fields:
        rule = spec.marker(Spans)
        if rule is None:
            continue
        total, offset, rows = body.get(spec.name), body.get(rule.offset, 0), bound.get(rule.axis)
        if total is None and offset:
            raise ValueError(f"{rule.offset} is {offset} but {spec.name} is not given; a "
                             f"message that is one part of many must name its {spec.name}")
        if total is not None and rows is not None and offset + rows > total:
            raise ValueError(f"rows {offset}..{offset + rows} lie beyond {spec.name} {total}")


_KIND_WORDS = {"f": "float", "i": "integer", "u": "integer", "b": "bool"}


def _check_array(label: str, array: Any, rule: Array | ArrayMap, key: str | None,
                 bound: dict[str, int], body: Mapping[str, Any], exact: bool) -> None:
    """Check one array against its rule; binds the rule's free axis names in ``bound``."""
    array = array if exact else np.asarray(array)
    dtypes = [np.dtype(d) for d in rule.dtypes_for(key)]
    if exact:
        wanted, dtype_ok = [d.name for d in dtypes], array.dtype in dtypes
    else:
        wanted = sorted({_KIND_WORDS[d.kind] for d in dtypes})
        dtype_ok = _KIND_WORDS.get(array.dtype.kind) in wanted
    axes = [AXIS.fullmatch(axis) for axis in rule.shape]
    want = [len(body[a["field"]]) if a["field"] else bound.get(a["name"]) for a in axes]
    fits = array.ndim == len(axes) and all(
        (w is None or got == w) and (not a["positive"] or got > 0)
        for got, w, a in zip(array.shape, want, axes))
    longest = getattr(rule, "max_rows", None)
    if dtype_ok and fits and longest is not None and array.shape[0] > longest:
        raise ValueError(f"{label} has {array.shape[0]} rows; at most {longest} are allowed")
    if not (dtype_ok and fits):
        shown = [str(w) if w is not None else (f"{a['name']}>0" if a["positive"] else "any")
                 for w, a in zip(want, axes)]
        have = f"shape {list(array.shape)}" if dtype_ok else f"dtype {array.dtype.name}"
        dtype = " or ".join(wanted)
        article = "an" if dtype[0] in "aeiou" else "a"
        raise ValueError(f"{label} has {have}; {label} must be {article} {dtype} array of "
                         f"shape [{', '.join(shown)}]")
    bound.update((a["name"], got) for got, a in zip(array.shape, axes) if a["name"])
    if isinstance(rule, Array):
        _check_values(label, array, rule)


def _check_values(label: str, array: np.ndarray, rule: Array) -> None:
    if rule.unique:
        values, counts = np.unique(array, return_counts=True)
        if values.size != array.size:
            raise ValueError(f"{label} must be unique; repeated: "
                             f"{values[counts > 1][:5].tolist()}")
    if rule.minimum is not None and array.size and array.min() < rule.minimum:
        raise ValueError(f"{label} values must be at least {rule.minimum}; got {array.min()}")
    if rule.increasing and array.size > 1:
        falls = np.flatnonzero(np.diff(array) <= 0)
        if falls.size:
            at = int(falls[0])
            raise ValueError(f"{label} must increase strictly; {array[at + 1]} follows "
                             f"{array[at]} at position {at + 1}")
    if rule.allowed is not None:
        bad = np.setdiff1d(np.unique(array), list(rule.allowed))
        if bad.size:
            allowed = " or ".join(f"{value} ({meaning})" for value, meaning in rule.allowed.items())
            raise ValueError(f"{label} values must be {allowed}; got {bad[:5].tolist()}")
