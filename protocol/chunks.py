"""Row chunks of a large snapshot, so that no ingest frame needs to exceed a few MiB.

A snapshot of the probe set carries N rows in every array (``sample_ids`` [N], each output
[N], each layer's features [N, D]). :func:`snapshot_chunks` cuts it by rows into snapshots of
at most about :data:`CHUNK_TARGET_BYTES` of arrays each (views, nothing copied); the trainer
sends them one after the other and the store shows the snapshot once all its rows are in
(see :class:`~sentrycam.protocol.messages.Snapshot`). Frames stay small, so a server can
bound the size of one frame and the memory it holds for frames not yet committed, and the
websocket's keepalive is answered between frames.
"""

from __future__ import annotations

import dataclasses

from sentrycam.protocol.messages import Snapshot

#: Bytes of arrays a snapshot chunk holds at most (one row more when a single row is larger).
CHUNK_TARGET_BYTES = 4 * 1024 * 1024

#: Seconds either end of an ingest websocket waits for the answer to a keepalive ping before
#: it gives the connection up. A server holding back (it reads nothing while its writer
#: catches up, see ``ServerSettings.ingest_max_bytes``) answers no ping meanwhile, so this is
#: longer than such a wait lasts on a working server: a minute or more under heavy load, not
#: 20 s (the websocket libraries' default, which cut concurrent large uploads). A dead peer
#: is still found: its TCP connection closes, or at the latest this long after a ping.
KEEPALIVE_TIMEOUT_S = 120.0


def row_nbytes(snapshot: Snapshot) -> int:
    """Bytes one row takes over every array of ``snapshot`` (sample id, outputs, features)."""
    arrays = [snapshot.sample_ids, *snapshot.outputs.values(), *snapshot.features.values()]
    return sum(array.itemsize * (array.size // max(1, len(array))) for array in arrays)


def snapshot_chunks(snapshot: Snapshot, target_bytes: int = CHUNK_TARGET_BYTES
                    ) -> list[Snapshot]:
    """``snapshot`` as row chunks of about ``target_bytes`` each, in row order.

    A snapshot that fits comes back alone and unchanged. Each chunk's arrays are views into
    the snapshot's; the first carries the whole snapshot's ``nonfinite`` counts.
    """
    if target_bytes < 1:
        raise ValueError(f"target_bytes must be at least 1, got {target_bytes}")
    total = len(snapshot.sample_ids)
    rows = max(1, target_bytes // max(1, row_nbytes(snapshot)))
    if total <= rows or not snapshot.is_whole:
        return [snapshot]
    return [dataclasses.replace(
        snapshot, sample_ids=snapshot.sample_ids[start:start + rows],
        outputs={name: values[start:start + rows] for name, values in snapshot.outputs.items()},
        features={name: values[start:start + rows]
                  for name, values in snapshot.features.items()},
        nonfinite=dict(snapshot.nonfinite) if start == 0 else {},
        row_offset=start, rows_total=total)
        for start in range(0, total, rows)]
