"""Binary frame format shared by the capture agent and the server.

A frame carries one message (:mod:`sentrycam.protocol.messages`)::

    offset  size  content
    0       4     magic b"SCAM"
    4       1     frame format version (uint8, ``FRAME_VERSION``)
    5       4     header length H (uint32, little endian)
    9       H     header: UTF-8 JSON object
    9+H     ...   array payload: the arrays listed in the header, raw C-order bytes, back to back

The header is ``{"v": SCHEMA_VERSION, "kind": str, "run_id": str, "seq": int, "time": float,
"body": {...}, "arrays": [{"name": str, "dtype": str, "shape": [int, ...]}, ...]}``.
Array names are a field name (``"sample_ids"``) or ``"<field>/<key>"`` for a mapping of
arrays (``"features/fc:input"``). Dtypes are numpy little-endian codes from ``ALLOWED_DTYPES``.

This module only frames and unframes. The server validates headers strictly (pydantic) before
trusting them; :func:`split_frame` checks only what is needed to cut the bytes safely.

Acknowledgements travel back as JSON text frames: ``{"type": "ack", "seq": N}`` once every
message with sequence number <= N of that connection's run is committed, and
``{"type": "error", "seq": N or null, "error": "..."}`` when a frame is rejected (the rest of
the connection carries on).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from typing import Any, Mapping

import numpy as np

from sentrycam.protocol.messages import MESSAGE_TYPES, SCHEMA_VERSION, Message

MAGIC = b"SCAM"
FRAME_VERSION = 1
_PREFIX = struct.Struct("<4sBI")
ALLOWED_DTYPES = frozenset({"<f2", "<f4", "<f8", "<i8", "<i4", "|u1", "|b1"})
MAX_HEADER_BYTES = 4 * 1024 * 1024


class FrameError(ValueError):
    """A frame that cannot be cut into header and arrays; the message says why."""


def _array_fields(cls: type) -> tuple[frozenset[str], frozenset[str]]:
    """Names of the dataclass fields that hold one array, and those that map keys to arrays."""
    return frozenset(cls.array_fields), frozenset(cls.array_map_fields)


#: How non-finite floats are spelled in JSON: on the wire and in the store (Python's float()
#: reads them back), and for browsers (JavaScript's Number() reads these).
WIRE_NONFINITE = ("nan", "inf", "-inf")
JS_NONFINITE = ("NaN", "Infinity", "-Infinity")


def json_safe(value: Any, names: tuple[str, str, str] = WIRE_NONFINITE) -> Any:
    """A strict-JSON-encodable copy of ``value``: numpy scalars and arrays become Python values,
    mappings and sequences are copied, and NaN/+Inf/-Inf floats become ``names``."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return names[0] if math.isnan(value) else (names[1] if value > 0 else names[2])
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, names) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, names) for v in value]
    return value


def encode(message: Message, seq: int, time: float) -> bytes:
    """Frame ``message`` with its sequence number. Returns the frame's bytes."""
    cls = type(message)
    single, mapping = _array_fields(cls)
    arrays: list[tuple[str, np.ndarray]] = []
    body: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "run_id":
            continue
        value = getattr(message, f.name)
        if f.name in single:
            arrays.append((f.name, value))
        elif f.name in mapping:
            body[f.name] = list(value.keys())
            arrays.extend((f"{f.name}/{key}", arr) for key, arr in value.items())
        else:
            body[f.name] = value
    specs, blobs = [], []
    for name, arr in arrays:
        arr = np.ascontiguousarray(arr)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        specs.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)})
        blobs.append(arr.tobytes())
    header = {
        "v": SCHEMA_VERSION,
        "kind": cls.kind,
        "run_id": message.run_id,
        "seq": int(seq),
        "time": float(time),
        "body": json_safe(body),
        "arrays": specs,
    }
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return b"".join([_PREFIX.pack(MAGIC, FRAME_VERSION, len(head)), head, *blobs])


def split_frame(frame: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Cut a frame into its JSON header and its arrays (read-only views into ``frame``).

    Raises :class:`FrameError` naming the first problem found.
    """
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise FrameError("frame must be binary; send sentrycam frames as binary websocket messages")
    view = memoryview(frame)
    if len(view) < _PREFIX.size:
        raise FrameError(f"frame too short ({len(view)} bytes); expected at least {_PREFIX.size}")
    magic, version, head_len = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise FrameError("bad magic bytes: this is not a sentrycam frame")
    if version != FRAME_VERSION:
        raise FrameError(f"frame format version {version} is not supported (expected {FRAME_VERSION})")
    if head_len > MAX_HEADER_BYTES or _PREFIX.size + head_len > len(view):
        raise FrameError(f"header length {head_len} does not fit in a frame of {len(view)} bytes")
    try:
        header = json.loads(bytes(view[_PREFIX.size:_PREFIX.size + head_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays", []), list):
        raise FrameError("header must be a JSON object with an 'arrays' list")
    arrays: dict[str, np.ndarray] = {}
    offset = _PREFIX.size + head_len
    for spec in header.get("arrays", []):
        name, dtype, shape = _check_spec(spec)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if offset + nbytes > len(view):
            raise FrameError(f"array {name!r} needs {nbytes} bytes but the frame ends first")
        arrays[name] = np.frombuffer(view[offset:offset + nbytes], dtype=dtype).reshape(shape)
        offset += nbytes
    if offset != len(view):
        raise FrameError(f"{len(view) - offset} trailing bytes after the last array")
    return header, arrays


def _check_spec(spec: Any) -> tuple[str, str, tuple[int, ...]]:
    if not isinstance(spec, dict):
        raise FrameError("each entry of 'arrays' must be an object with name, dtype and shape")
    name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
    if not isinstance(name, str) or not name:
        raise FrameError("array entry without a name")
    if dtype not in ALLOWED_DTYPES:
        raise FrameError(f"array {name!r} has dtype {dtype!r}; allowed: {sorted(ALLOWED_DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > 4
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise FrameError(f"array {name!r} has an invalid shape {shape!r}")
    return name, dtype, tuple(shape)


def _from_json_safe(value: Any) -> Any:
    if value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: _from_json_safe(v) for k, v in value.items()}
    return value


def build_message(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> Message:
    """Rebuild the dataclass of a header already validated by the caller.

    Raises :class:`FrameError` if the header's kind is unknown or fields are missing.
    """
    cls = MESSAGE_TYPES.get(header.get("kind"))
    if cls is None:
        raise FrameError(f"unknown message kind {header.get('kind')!r}; known: {sorted(MESSAGE_TYPES)}")
    single, mapping = _array_fields(cls)
    body = header.get("body") or {}
    kwargs: dict[str, Any] = {"run_id": header.get("run_id")}
    for f in dataclasses.fields(cls):
        if f.name == "run_id":
            continue
        if f.name in single:
            if f.name not in arrays:
                raise FrameError(f"{cls.kind} frame lacks array {f.name!r}")
            kwargs[f.name] = arrays[f.name]
        elif f.name in mapping:
            keys = body.get(f.name, [])
            missing = [k for k in keys if f"{f.name}/{k}" not in arrays]
            if missing:
                raise FrameError(f"{cls.kind} frame lacks arrays for {f.name} {missing}")
            kwargs[f.name] = {k: arrays[f"{f.name}/{k}"] for k in keys}
        elif f.name in body:
            value = _from_json_safe(body[f.name])
            kwargs[f.name] = tuple(value) if f.name in ("layers", "stats") else value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise FrameError(f"{cls.kind} frame lacks field {f.name!r}")
    return cls(**kwargs)


def decode(frame: bytes) -> tuple[int, Message]:
    """Unframe without schema validation (for trusted frames such as a local spool)."""
    header, arrays = split_frame(frame)
    return int(header.get("seq", -1)), build_message(header, arrays)
