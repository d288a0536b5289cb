"""The binary container of every sentrycam frame: a JSON header, then raw numpy arrays.

Both frame formats use it: ingest frames (trainer -> server, magic ``b"SCAM"``) and push
frames (server -> dashboards, magic ``b"SCPF"``). Each names a :class:`ContainerFormat` (its
magic, version, allowed dtypes and size limits); this module packs and cuts the bytes::

    offset  size  content
    0       4     magic
    4       1     format version (uint8)
    5       4     header length H (uint32, little endian)
    9       H     header: a UTF-8 JSON object; its "arrays" entry lists the payload as
                  [{"name": str, "dtype": str, "shape": [int, ...]}, ...]
    9+H     ...   the arrays listed, raw little-endian C-order bytes, back to back

Cutting never trusts the header: every length is checked against the bytes that are there
(with Python integers, so a shape whose size overflows int64 is refused, not wrapped), the
JSON must be an object whose nesting stays within ``max_depth``, and every problem raises the
format's own error class with a message that names it. Arrays come back as read-only views
into the frame, so cutting a frame copies no payload.

Non-finite floats cannot travel in strict JSON: :func:`json_safe` spells them as strings
(``WIRE_NONFINITE`` for Python readers, ``JS_NONFINITE`` for JavaScript's ``Number()``).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

import numpy as np

_PREFIX = struct.Struct("<4sBI")
PREFIX_BYTES = _PREFIX.size

#: How non-finite floats are spelled in JSON: on the wire and in the store (Python's float()
#: reads them back), and for browsers (JavaScript's Number() reads these).
WIRE_NONFINITE = ("nan", "inf", "-inf")
JS_NONFINITE = ("NaN", "Infinity", "-Infinity")


class ContainerError(ValueError):
    """Bytes that cannot be cut into a header and arrays; the message says why."""


@dataclass(frozen=True)
class ContainerFormat:
    """One frame format: what marks it, and the limits a reader enforces.

    ``error`` is the exception class raised for a bad frame (a subclass of ContainerError),
    so that each side reports problems under its own name.
    """

    name: str
    magic: bytes
    version: int
    dtypes: frozenset[str]
    max_header_bytes: int
    max_arrays: int = 4096
    max_ndim: int = 4
    max_depth: int = 64
    error: type[ContainerError] = ContainerError


#: Types :func:`json_safe` returns as they are, checked exactly (a subclass, such as a str
#: enum or numpy's float64, takes the general path).
_AS_THEY_ARE = frozenset({str, int, bool, type(None)})


def json_safe(value: Any, names: tuple[str, str, str] = WIRE_NONFINITE) -> Any:
    """A strict-JSON-encodable copy of ``value``: numpy scalars and arrays become Python values,
    mappings and sequences are copied, and NaN/+Inf/-Inf floats become ``names``."""
    # Exact built-in types first, and concrete classes before abstract ones: a frame's header is
    # mostly these, and each isinstance check against an abstract class costs a few
    # microseconds in the sender thread.
    if type(value) in _AS_THEY_ARE:
        return value
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return names[0] if math.isnan(value) else (names[1] if value > 0 else names[2])
    if isinstance(value, (dict, Mapping)):
        return {str(k): json_safe(v, names) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, names) for v in value]
    return value


def from_json_safe(value: Any) -> Any:
    """Undo :func:`json_safe` (``WIRE_NONFINITE`` spellings) inside mappings and lists."""
    if isinstance(value, str) and value in WIRE_NONFINITE:
        return float(value)
    if isinstance(value, dict):
        return {k: from_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_safe(v) for v in value]
    return value


def pack(fmt: ContainerFormat, header: Mapping[str, Any],
         arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    """One frame of ``fmt``: ``header`` (strict JSON; non-finite floats already replaced,
    no "arrays" key) followed by ``arrays`` converted to contiguous little-endian bytes.

    Raises ``fmt.error`` for an array whose dtype the format does not carry.
    """
    specs, blobs = [], []
    for name, array in (arrays or {}).items():
        array = np.ascontiguousarray(array)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        if array.dtype.str not in fmt.dtypes:
            raise fmt.error(f"array {name!r} has dtype {array.dtype.str}; {fmt.name} frames "
                            f"carry {sorted(fmt.dtypes)}")
        specs.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape)})
        blobs.append(array.tobytes())
    head = json.dumps({**header, "arrays": specs}, separators=(",", ":"),
                      allow_nan=False).encode()
    return b"".join([_PREFIX.pack(fmt.magic, fmt.version, len(head)), head, *blobs])


def unpack(fmt: ContainerFormat, frame: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Cut a frame of ``fmt`` into its header (without "arrays") and its arrays (read-only
    views into ``frame``, in header order). Raises ``fmt.error`` naming the first problem."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise fmt.error(f"a {fmt.name} frame must be binary, got {type(frame).__name__}")
    view = memoryview(frame)
    if len(view) < PREFIX_BYTES:
        raise fmt.error(f"frame too short ({len(view)} bytes); a {fmt.name} frame has at "
                        f"least {PREFIX_BYTES}")
    magic, version, head_len = _PREFIX.unpack_from(view)
    if magic != fmt.magic:
        raise fmt.error(f"bad magic bytes {bytes(magic)!r}: this is not a {fmt.name} frame")
    if version != fmt.version:
        raise fmt.error(f"{fmt.name} frame format version {version} is not supported "
                        f"(expected {fmt.version})")
    if head_len > fmt.max_header_bytes or PREFIX_BYTES + head_len > len(view):
        raise fmt.error(f"header length {head_len} does not fit in a frame of {len(view)} "
                        f"bytes (at most {fmt.max_header_bytes})")
    header = _read_header(fmt, bytes(view[PREFIX_BYTES:PREFIX_BYTES + head_len]))
    specs = header.pop("arrays", [])
    if not isinstance(specs, list):
        raise fmt.error("the header's 'arrays' must be a list")
    if len(specs) > fmt.max_arrays:
        raise fmt.error(f"{len(specs)} arrays in one frame; at most {fmt.max_arrays}")
    arrays: dict[str, np.ndarray] = {}
    offset = PREFIX_BYTES + head_len
    for spec in specs:
        name, dtype, shape = _check_spec(fmt, spec)
        if name in arrays:
            raise fmt.error(f"array {name!r} is listed twice")
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize  # Python ints: no overflow
        if nbytes > len(view) - offset:
            raise fmt.error(f"array {name!r} of shape {list(shape)} needs {nbytes} bytes but "
                            f"the frame ends first ({len(view) - offset} left)")
        arrays[name] = np.frombuffer(view[offset:offset + nbytes], dtype=dtype).reshape(shape)
        offset += nbytes
    if offset != len(view):
        raise fmt.error(f"{len(view) - offset} trailing bytes after the last array")
    return header, arrays


def _read_header(fmt: ContainerFormat, raw: bytes) -> dict[str, Any]:
    depth = _nesting_depth(raw)
    if depth > fmt.max_depth:
        raise fmt.error(f"header nests {depth} levels deep; at most {fmt.max_depth}")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fmt.error(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise fmt.error(f"header must be a JSON object, got {type(header).__name__}")
    return header


def _nesting_depth(raw: bytes) -> int:
    """Upper bound of the bracket depth of a JSON text, counted before parsing so that a
    deeply nested header cannot exhaust the parser's recursion (brackets inside strings are
    counted too, which can only over-estimate)."""
    brackets = np.frombuffer(raw.translate(None, delete=_NOT_BRACKETS), dtype=np.uint8)
    if brackets.size == 0:
        return 0
    opening = (brackets == ord("[")) | (brackets == ord("{"))
    return int(np.cumsum(np.where(opening, 1, -1)).max())


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _check_spec(fmt: ContainerFormat, spec: Any) -> tuple[str, str, tuple[int, ...]]:
    if not isinstance(spec, dict):
        raise fmt.error("each entry of 'arrays' must be an object with name, dtype and shape")
    name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
    if not isinstance(name, str) or not name:
        raise fmt.error("array entry without a name")
    if dtype not in fmt.dtypes:
        raise fmt.error(f"array {name!r} has dtype {dtype!r}; allowed: {sorted(fmt.dtypes)}")
    if (not isinstance(shape, list) or len(shape) > fmt.max_ndim
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in shape)):
        raise fmt.error(f"array {name!r} has an invalid shape {shape!r} (a list of at most "
                        f"{fmt.max_ndim} integers >= 0)")
    return name, dtype, tuple(shape)
