"""Push frames: the binary, columnar messages the server's push hub sends to dashboards.

One frame carries one update of one run (new scalars, layer statistics, a 2D map ...)::

    offset  size  content
    0       4     magic b"SCPF"
    4       1     frame format version (uint8, ``FRAME_VERSION``)
    5       4     header length H (uint32, little endian)
    9       H     header: UTF-8 JSON object {"type": str, "run_id": str, ..., "arrays": [...]}
    9+H     ...   the arrays listed in the header (name, dtype, shape), raw C-order bytes

Points travel as packed numpy arrays, never as one JSON object per point: 2,000 probe samples'
coordinates are 16 kB of float32. Only numpy and json are needed on either side, so the
backend (which encodes) and the frontend's API client (which decodes) share this module.
Frame types and their fields are listed in :mod:`sentrycam.backend.push_frames`.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Mapping

import numpy as np

MAGIC = b"SCPF"
FRAME_VERSION = 1
_PREFIX = struct.Struct("<4sBI")
ALLOWED_DTYPES = frozenset({"<f4", "<f8", "<i8", "<i4", "|u1"})


class PushFrameError(ValueError):
    """Bytes that are not a push frame; the message says what is wrong."""


def encode_frame(frame_type: str, run_id: str, arrays: Mapping[str, np.ndarray] | None = None,
                 **fields: Any) -> bytes:
    """One frame: ``fields`` (JSON-encodable, non-finite floats already replaced) go in the
    header, each array of ``arrays`` in the payload (converted to little-endian)."""
    specs, blobs = [], []
    for name, array in (arrays or {}).items():
        array = np.ascontiguousarray(array)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        if array.dtype.str not in ALLOWED_DTYPES:
            raise PushFrameError(f"array {name!r} has dtype {array.dtype.str}; allowed: "
                                 f"{sorted(ALLOWED_DTYPES)}")
        specs.append([name, array.dtype.str, list(array.shape)])
        blobs.append(array.tobytes())
    header = {"type": frame_type, "run_id": run_id, **fields, "arrays": specs}
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return b"".join([_PREFIX.pack(MAGIC, FRAME_VERSION, len(head)), head, *blobs])


def decode_frame(frame: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, arrays) of a frame; arrays are read-only views into ``frame``."""
    view = memoryview(frame)
    if len(view) < _PREFIX.size:
        raise PushFrameError(f"frame of {len(view)} bytes is shorter than its prefix")
    magic, version, head_len = _PREFIX.unpack_from(view)
    if magic != MAGIC or version != FRAME_VERSION:
        raise PushFrameError(f"not a push frame of version {FRAME_VERSION} "
                             f"(magic {bytes(magic)!r}, version {version})")
    if _PREFIX.size + head_len > len(view):
        raise PushFrameError(f"header length {head_len} exceeds the frame")
    header = json.loads(bytes(view[_PREFIX.size:_PREFIX.size + head_len]))
    arrays: dict[str, np.ndarray] = {}
    offset = _PREFIX.size + head_len
    for name, dtype, shape in header.pop("arrays", []):
        if dtype not in ALLOWED_DTYPES:
            raise PushFrameError(f"array {name!r} has unsupported dtype {dtype!r}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if offset + nbytes > len(view):
            raise PushFrameError(f"array {name!r} runs past the end of the frame")
        arrays[name] = np.frombuffer(view[offset:offset + nbytes], dtype=dtype).reshape(shape)
        offset += nbytes
    if offset != len(view):
        raise PushFrameError(f"{len(view) - offset} trailing bytes after the last array")
    return header, arrays
