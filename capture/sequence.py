"""Each run's own sequence numbers on the wire, and what to resend when the server asks.

The server stores a run's messages only in order: seq 0, 1, 2, ... of that run, each after
the one before (:mod:`sentrycam.protocol.wire`). One transport may carry several runs, so the
transport counts in a sequence of its own (its queue, in-flight window and spool use it) and
the sender thread gives each frame, as it encodes it, the next seq of the frame's run
(:class:`RunSequences`). A message that cannot be encoded takes no seq, so it leaves no hole.

A frame can still go missing: the server refused it, it was too large to send, or it was lost
with the process that held it. The server then answers the next frame of that run with the
seq it needs (``expected_seq``); :func:`resend_plan` makes the frames that continue the run
from there: the window's frames of the run in order, and in each hole a small ``lost`` event
(:func:`lost_frame`) that takes the missing seq and tells the run's event log what happened.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

from sentrycam.protocol import wire
from sentrycam.protocol.messages import Event

logger = logging.getLogger(__name__)

#: ``Event.event`` of the stand-in for a message that never reached the server.
LOST_EVENT = "lost_message"
#: A hole wider than this is not filled (the server lost what it had stored, or a bug):
#: the frames stay unacknowledged in the spool instead of being followed by that many events.
MAX_FILL = 10_000


class FrameAddress(NamedTuple):
    """Where a frame belongs: its run and its seq in that run ("" and -1 when unreadable)."""

    run_id: str
    seq: int


def frame_address(frame: bytes) -> FrameAddress:
    """The run and seq written in a frame's header."""
    try:
        header = wire.split_frame(frame)[0]
    except wire.FrameError:
        return FrameAddress("", -1)
    seq = header.get("seq")
    return FrameAddress(str(header.get("run_id", "")), seq if isinstance(seq, int) else -1)


def frame_step(frame: bytes) -> int:
    """The step a frame's message belongs to (0 when it has none or the header is unreadable)."""
    try:
        step = (wire.split_frame(frame)[0].get("body") or {}).get("step", 0)
    except wire.FrameError:
        return 0
    return step if isinstance(step, int) and step >= 0 else 0


class RunSequences:
    """The last seq given to each run's frames; used by the sender thread only."""

    def __init__(self, last: dict[str, int] | None = None) -> None:
        self._last = dict(last or {})

    @classmethod
    def from_frames(cls, frames: Any) -> RunSequences:
        """Carry on after the frames an earlier process left (an iterable of frame bytes)."""
        last: dict[str, int] = {}
        for frame in frames:
            run_id, seq = frame_address(frame)
            if run_id:
                last[run_id] = max(seq, last.get(run_id, -1))
        return cls(last)

    def next(self, run_id: str) -> int:
        """The seq the next frame of ``run_id`` gets (0 for its first)."""
        return self._last.get(run_id, -1) + 1

    def take(self, run_id: str, seq: int) -> None:
        """Frame ``seq`` of ``run_id`` was made: the next one gets ``seq + 1``."""
        self._last[run_id] = seq


def lost_frame(run_id: str, seq: int, step: int) -> bytes:
    """A frame holding seq ``seq`` of ``run_id`` in place of a message the server never got:
    an :class:`~sentrycam.protocol.messages.Event` at ``step`` saying so."""
    now = time.time()
    event = Event(run_id, step, now, LOST_EVENT,
                  f"message {seq} of this run never reached the server (refused, too large, "
                  "or lost with the process that held it); the run goes on without it",
                  {"seq": seq})
    return wire.encode(event, seq, now)


def resend_plan(held: list[tuple[int, bytes]], run_id: str, expected: int) -> list[bytes]:
    """The frames that continue ``run_id`` from seq ``expected``.

    ``held``: ``(seq, frame)`` of the run's frames still unacknowledged, any order. Returns
    those with seq >= ``expected`` in seq order, with a :func:`lost_frame` in every missing
    seq before each of them; an empty list when nothing is held from ``expected`` on or the
    first hole is wider than :data:`MAX_FILL`.
    """
    held = sorted((seq, frame) for seq, frame in held if seq >= expected)
    if not held:
        return []
    if held[0][0] - expected > MAX_FILL:
        logger.error("the server needs message %d of run %s next, but the oldest one held is "
                     "%d; the run cannot continue on that server (did it lose its database?)",
                     expected, run_id, held[0][0])
        return []
    frames: list[bytes] = []
    next_seq = expected
    for seq, frame in held:
        if seq > next_seq:
            step = frame_step(frame)
            frames.extend(lost_frame(run_id, missing, step) for missing in range(next_seq, seq))
        frames.append(frame)
        next_seq = seq + 1
    return frames
