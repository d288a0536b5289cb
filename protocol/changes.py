"""The kinds of change the server's change feed announces (see :mod:`sentrycam.backend.feed`).

Ingest kinds are the message kinds of :mod:`sentrycam.protocol.messages` (a change of one of
these carries the stored message); derived kinds are written by the server's own workers.
``ChangeKind`` is a ``str`` enum, so a kind compares equal to its name and encodes as it in JSON.
"""

from __future__ import annotations

from enum import Enum


class ChangeKind(str, Enum):
    """What is new in the store."""

    # ingest kinds: one per message type
    RUN_START = "run_start"
    PROBE = "probe"
    SCALARS = "scalars"
    LAYER_STATS = "layer_stats"
    SNAPSHOT = "snapshot"
    EVENT = "event"
    STATUS = "status"
    RUN_END = "run_end"
    # derived kinds: written by the projector worker and the audit engine
    EMBEDDING = "embedding"
    QUALITY = "quality"
    PROJECTOR = "projector"
    ALERT = "alert"

    def __str__(self) -> str:
        return self.value


#: The kinds a trainer's messages produce, in the order a run usually sends them.
INGEST_KINDS = (ChangeKind.RUN_START, ChangeKind.PROBE, ChangeKind.SCALARS,
                ChangeKind.LAYER_STATS, ChangeKind.SNAPSHOT, ChangeKind.EVENT,
                ChangeKind.STATUS, ChangeKind.RUN_END)
#: The kinds the server derives from stored data.
DERIVED_KINDS = (ChangeKind.EMBEDDING, ChangeKind.QUALITY, ChangeKind.PROJECTOR,
                 ChangeKind.ALERT)
