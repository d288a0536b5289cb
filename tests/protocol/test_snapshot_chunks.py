"""Row chunks of a snapshot: every row once, in order, under the target; their frames validate;
a part that names no total or reaches past it is refused; version-2 frames still read whole."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from sentrycam.protocol import wire
from sentrycam.protocol.chunks import CHUNK_TARGET_BYTES, row_nbytes, snapshot_chunks
from sentrycam.protocol.messages import Snapshot
from sentrycam.protocol.validation import FrameRejected, check_message, parse_frame

RUN = "chunks0"


def _snapshot(n: int, dim: int) -> Snapshot:
    rng = np.random.default_rng(11)
    return Snapshot(RUN, 7, 2, rng.permutation(n).astype(np.int64),
                    {"pred": rng.integers(0, 5, n), "loss": rng.random(n).astype(np.float32)},
                    {"fc": rng.standard_normal((n, dim)).astype(np.float16)}, {"fc": 3})


def test_chunks_cover_every_row_once_in_order_under_the_target():
    snapshot = _snapshot(30_000, 256)
    assert row_nbytes(snapshot) == 8 + 8 + 4 + 2 * 256
    chunks = snapshot_chunks(snapshot)
    assert len(chunks) == -(-30_000 * row_nbytes(snapshot) // CHUNK_TARGET_BYTES)
    assert [c.row_offset for c in chunks] == list(np.cumsum([0] + [len(c.sample_ids)
                                                                    for c in chunks[:-1]]))
    assert {c.rows_total for c in chunks} == {30_000} and not any(c.is_whole for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.sample_ids for c in chunks]),
                                  snapshot.sample_ids)
    np.testing.assert_array_equal(np.concatenate([c.features["fc"] for c in chunks]),
                                  snapshot.features["fc"])
    assert [c.nonfinite for c in chunks[:2]] == [{"fc": 3}, {}]  # the whole count, once
    assert np.shares_memory(chunks[1].features["fc"], snapshot.features["fc"])  # no copies
    for seq, chunk in enumerate(chunks):
        frame = wire.encode(chunk, seq, 1.0)
        assert len(frame) < CHUNK_TARGET_BYTES + 4096
        _, parsed = parse_frame(frame)
        assert (parsed.row_offset, parsed.rows_total) == (chunk.row_offset, chunk.rows_total)


def test_a_snapshot_that_fits_goes_whole():
    snapshot = _snapshot(100, 16)
    assert snapshot_chunks(snapshot) == [snapshot] and snapshot.is_whole


@pytest.mark.parametrize("offset, total, problem", [
    (5, None, "must name its rows_total"),
    (0, 50, "lie beyond rows_total 50"),
    (95, 120, "lie beyond rows_total 120"),
])
def test_a_part_outside_its_total_is_refused(offset, total, problem):
    part = Snapshot(**{**_snapshot(100, 4).__dict__, "row_offset": offset, "rows_total": total})
    with pytest.raises(FrameRejected, match=problem):
        parse_frame(wire.encode(part, 0, 1.0))
    with pytest.raises(ValueError, match=problem):
        check_message(part)


def test_a_version_2_frame_is_read_as_a_whole_snapshot():
    """A trainer of message schema 2 (or its spool) knew no row chunks."""
    snapshot = _snapshot(20, 4)
    frame = wire.encode(snapshot, 3, 1.0)
    head_len = struct.unpack_from("<I", frame, 5)[0]
    header = json.loads(frame[9:9 + head_len])
    header["v"] = 2
    for field in ("row_offset", "rows_total"):
        del header["body"][field]
    head = json.dumps(header).encode()
    seq, parsed = parse_frame(frame[:5] + struct.pack("<I", len(head)) + head
                              + frame[9 + head_len:])
    assert seq == 3 and parsed.is_whole and parsed.rows_total is None
    np.testing.assert_array_equal(parsed.features["fc"], snapshot.features["fc"])
