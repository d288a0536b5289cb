"""The ingest frame: one message (:mod:`sentrycam.protocol.messages`) in the binary container
of :mod:`sentrycam.protocol.container` (magic ``b"SCAM"``, format version ``FRAME_VERSION``).

The header is ``{"v": SCHEMA_VERSION, "kind": str, "run_id": str, "seq": int, "time": float,
"body": {...}, "arrays": [...]}``. ``body`` holds the message's plain fields (NaN/Inf spelled
as ``WIRE_NONFINITE``) and, for each field that maps names to arrays, the list of its names.
Array names are a field name (``"sample_ids"``) or ``"<field>/<name>"`` for a mapping of
arrays (``"features/fc:input"``). Which fields are arrays is read off the messages' own
declarations (``array_fields``, ``array_map_fields``).

This module only frames and unframes. The server validates headers and arrays
(:func:`sentrycam.protocol.validation.parse_frame`) before trusting them; :func:`split_frame`
checks only what is needed to cut the bytes safely.

The server answers on the same connection with JSON text frames (:class:`ReplyType`), built
only by :func:`ack_reply`, :func:`error_reply` and :func:`alert_reply`:

- ``{"type": "ack", "run_id": R, "seq": N}`` once every message of run R with sequence number
  <= N is committed;
- ``{"type": "error", "run_id": R or null, "seq": N or null, "error": "..."}`` when a frame is
  rejected (the rest of the connection carries on); the client gives that frame up;
- the same with ``"retry": true`` when the frame is fine but the server cannot store anything
  now (its disk is full, an I/O error): nothing of it is stored, and the client keeps the frame
  (spooled) and sends it again later, with backoff, until it is acknowledged;
- the same with ``"expected_seq": E`` when the frame came out of order: run R's messages are
  stored only in sequence (each run's seqs count 0, 1, 2, ...), E is the seq the server needs
  next, and the client resends from E (nothing after E is stored before E is);
- ``{"type": "alert", "run_id": R, "alert": {...}}`` for an alert the audit engine raised on R.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Mapping

import numpy as np

from sentrycam.protocol.container import (ContainerError, ContainerFormat, from_json_safe,
                                          json_safe, pack, unpack)
from sentrycam.protocol.messages import MESSAGE_TYPES, SCHEMA_VERSION, Message

MAGIC = b"SCAM"
FRAME_VERSION = 1
ALLOWED_DTYPES = frozenset({"<f2", "<f4", "<f8", "<i8", "<i4", "|u1", "|b1"})
MAX_HEADER_BYTES = 4 * 1024 * 1024


class FrameError(ContainerError):
    """A frame that cannot be cut into header and arrays; the message says why."""


FORMAT = ContainerFormat(name="sentrycam ingest", magic=MAGIC, version=FRAME_VERSION,
                         dtypes=ALLOWED_DTYPES, max_header_bytes=MAX_HEADER_BYTES,
                         error=FrameError)


def message_parts(message: Message) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ``body`` of ``message`` (plain fields as they are, and the names of each mapping of
    arrays) and its arrays by frame name; ``run_id`` is neither (it travels in the header)."""
    cls = type(message)
    body: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    for spec in cls.schema.fields:
        if spec.name == "run_id":
            continue
        value = getattr(message, spec.name)
        if spec.name in cls.array_fields:
            arrays[spec.name] = value
        elif spec.name in cls.array_map_fields:
            body[spec.name] = list(value.keys())
            arrays.update((f"{spec.name}/{key}", array) for key, array in value.items())
        else:
            body[spec.name] = value
    return body, arrays


def encode(message: Message, seq: int, time: float) -> bytes:
    """Frame ``message`` with its sequence number. Returns the frame's bytes."""
    body, arrays = message_parts(message)
    header = {"v": SCHEMA_VERSION, "kind": str(type(message).kind), "run_id": message.run_id,
              "seq": int(seq), "time": float(time), "body": json_safe(body)}
    return pack(FORMAT, header, arrays)


def split_frame(frame: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Cut a frame into its JSON header (without "arrays") and its arrays (read-only views
    into ``frame``). Raises :class:`FrameError` naming the first problem found."""
    return unpack(FORMAT, frame)


def build_message(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Message:
    """Rebuild the dataclass of a header (validated by the caller, or trusted).

    Raises :class:`FrameError` if the header's kind is unknown or fields are missing.
    """
    cls = MESSAGE_TYPES.get(header.get("kind"))
    if cls is None:
        raise FrameError(f"unknown message kind {header.get('kind')!r}; known: "
                         f"{sorted(map(str, MESSAGE_TYPES))}")
    body = header.get("body") or {}
    kwargs: dict[str, Any] = {"run_id": header.get("run_id")}
    for spec in cls.schema.fields:
        if spec.name == "run_id":
            continue
        if spec.name in cls.array_fields:
            if spec.name not in arrays:
                raise FrameError(f"{cls.kind} frame lacks array {spec.name!r}")
            kwargs[spec.name] = arrays[spec.name]
        elif spec.name in cls.array_map_fields:
            keys = body.get(spec.name, [])
            missing = [k for k in keys if f"{spec.name}/{k}" not in arrays]
            if missing:
                raise FrameError(f"{cls.kind} frame lacks arrays for {spec.name} {missing}")
            kwargs[spec.name] = {k: arrays[f"{spec.name}/{k}"] for k in keys}
        elif spec.name in body:
            value = body[spec.name]
            value = value if spec.base is str else from_json_safe(value)  # "nan" is a fine name
            kwargs[spec.name] = tuple(value) if spec.is_tuple else value
        elif not spec.has_default:
            raise FrameError(f"{cls.kind} frame lacks field {spec.name!r}")
    return cls(**kwargs)


def decode(frame: bytes) -> tuple[int, Message]:
    """Unframe without schema validation (for trusted frames such as a local spool)."""
    header, arrays = split_frame(frame)
    return int(header.get("seq", -1)), build_message(header, arrays)


class ReplyType(str, Enum):
    """The ``type`` of a JSON text frame the server sends back on an ingest connection."""

    ACK = "ack"
    ERROR = "error"
    ALERT = "alert"


def ack_reply(run_id: str, seq: int) -> dict[str, Any]:
    """Every message of ``run_id`` up to ``seq`` is committed."""
    return {"type": ReplyType.ACK.value, "run_id": run_id, "seq": int(seq)}


def error_reply(problem: str, *, seq: int | None = None, run_id: str | None = None,
                expected_seq: int | None = None, retry: bool = False) -> dict[str, Any]:
    """A frame was refused; ``problem`` says why (``seq``/``run_id`` when they were readable).

    ``expected_seq``: the frame was out of order and the server needs that seq of ``run_id``
    next; the client is to resend from there instead of giving the frame up. ``retry``: the
    server cannot store now (storage failure); the client keeps the frame and resends it later.
    """
    reply = {"type": ReplyType.ERROR.value, "run_id": run_id, "seq": seq, "error": problem}
    if expected_seq is not None:
        reply["expected_seq"] = int(expected_seq)
    if retry:
        reply["retry"] = True
    return reply


def alert_reply(run_id: str, alert: Mapping[str, Any]) -> dict[str, Any]:
    """An alert of ``run_id`` (the store's alert row, JSON-safe) for the trainer's callback."""
    return {"type": ReplyType.ALERT.value, "run_id": run_id, "alert": alert}
