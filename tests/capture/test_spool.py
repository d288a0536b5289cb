"""The disk spool: append, read back in order, delete once acknowledged, survive a crash."""

import subprocess
import sys

import numpy as np
import pytest

from sentrycam.protocol import wire
from sentrycam.protocol.messages import Scalars
from sentrycam.capture.spool import (RECORD_HEADER, Spool, SpoolLockedError, spooled_runs)


def _frame(seq: int) -> bytes:
    return wire.encode(Scalars("run", seq, 1.5, {"loss": float(seq)}), seq, 100.0 + seq)


def _open(path, **kw) -> Spool:
    spool = Spool(path, **kw)
    spool.open()
    return spool


def test_records_come_back_in_order_and_decode_to_the_same_messages(tmp_path):
    spool = _open(tmp_path / "run")
    for seq in range(1, 21):
        spool.append(seq, _frame(seq))
    got = list(spool.records())
    assert [seq for seq, _ in got] == list(range(1, 21))
    seq, message = wire.decode(got[6][1])
    assert seq == 7 and message == Scalars("run", 7, 1.5, {"loss": 7.0})
    assert [s for s, _ in spool.records(after_seq=15)] == [16, 17, 18, 19, 20]


def test_order_is_kept_across_segments_and_reopening(tmp_path):
    spool = _open(tmp_path / "run", segment_bytes=600)  # a few records per segment
    for seq in range(1, 51):
        spool.append(seq, _frame(seq))
    assert len(spool.segments()) > 5
    spool.close()
    again = _open(tmp_path / "run", segment_bytes=600)
    assert again.last_seq == 50
    again.append(51, _frame(51))
    assert [s for s, _ in again.records()] == list(range(1, 52))


def test_reader_picks_up_records_appended_after_it_reached_the_end(tmp_path):
    spool = _open(tmp_path / "run", segment_bytes=600)
    spool.append(1, _frame(1))
    cursor = spool.reader()
    assert [s for s, _ in cursor.next_batch(10, 1 << 20)] == [1]
    assert cursor.next_batch(10, 1 << 20) == []
    for seq in range(2, 12):
        spool.append(seq, _frame(seq))
    first = cursor.next_batch(4, 1 << 20)
    rest = cursor.next_batch(100, 1 << 20)
    assert [s for s, _ in first + rest] == list(range(2, 12)) and len(first) == 4


def test_a_batch_stops_at_the_byte_limit_but_returns_at_least_one_record(tmp_path):
    spool = _open(tmp_path / "run")
    for seq in range(1, 6):
        spool.append(seq, _frame(seq))
    cursor = spool.reader()
    assert len(cursor.next_batch(100, max_bytes=1)) == 1
    assert [s for s, _ in cursor.next_batch(100, 1 << 20)] == [2, 3, 4, 5]


def test_ack_deletes_only_fully_acknowledged_segments(tmp_path):
    spool = _open(tmp_path / "run", segment_bytes=600)
    for seq in range(1, 31):
        spool.append(seq, _frame(seq))
    firsts = [first for first, _ in spool.segments()]
    cut = firsts[2] - 1  # the last seq of the second segment
    assert spool.ack(cut) == 2
    assert [first for first, _ in spool.segments()] == firsts[2:]
    assert spool.ack(cut + 1) == 0  # the third segment still holds unacknowledged records
    assert [s for s, _ in spool.records(after_seq=cut)][0] == cut + 1
    assert spool.ack(30) == len(firsts) - 2
    assert spool.segments() == []
    spool.append(31, _frame(31))  # writing goes on in a new segment
    assert [s for s, _ in spool.records()] == [31]


def test_close_removes_an_empty_spool_folder_but_keeps_one_with_data(tmp_path):
    empty = _open(tmp_path / "empty")
    empty.close()
    assert not (tmp_path / "empty").exists()
    full = _open(tmp_path / "full")
    full.append(1, _frame(1))
    full.close()
    assert spooled_runs(tmp_path) == [tmp_path / "full"]


def test_a_record_cut_short_by_a_crash_is_ignored_and_writing_resumes_after_it(tmp_path):
    spool = _open(tmp_path / "run")
    for seq in range(1, 6):
        spool.append(seq, _frame(seq))
    spool.close()
    (segment,) = [path for _, path in Spool(tmp_path / "run").segments()]
    with open(segment, "ab") as f:  # the crash: seq 6 header and half its frame
        frame = _frame(6)
        f.write(RECORD_HEADER.pack(b"SREC", 6, len(frame), 0) + frame[: len(frame) // 2])
    reopened = _open(tmp_path / "run")
    assert reopened.last_seq == 5
    assert [s for s, _ in reopened.records()] == [1, 2, 3, 4, 5]
    reopened.append(6, _frame(6))
    reopened.append(7, _frame(7))
    got = list(reopened.records())
    assert [s for s, _ in got] == [1, 2, 3, 4, 5, 6, 7]
    assert wire.decode(got[5][1])[1].values == {"loss": 6.0}


def test_a_record_with_a_bad_checksum_ends_its_segment(tmp_path):
    spool = _open(tmp_path / "run")
    for seq in range(1, 4):
        spool.append(seq, _frame(seq))
    spool.close()
    (segment,) = [path for _, path in Spool(tmp_path / "run").segments()]
    data = bytearray(segment.read_bytes())
    second = RECORD_HEADER.size + len(_frame(1))
    data[second + RECORD_HEADER.size + 3] ^= 0xFF  # flip a byte inside the frame of seq 2
    segment.write_bytes(bytes(data))
    assert [s for s, _ in Spool(tmp_path / "run").records()] == [1]


def test_seq_must_increase(tmp_path):
    spool = _open(tmp_path / "run")
    spool.append(3, _frame(3))
    with pytest.raises(ValueError, match="increasing seq"):
        spool.append(3, _frame(3))


def test_a_second_holder_of_the_same_folder_is_refused(tmp_path):
    first = _open(tmp_path / "run")
    with pytest.raises(SpoolLockedError, match="in use by another process"):
        Spool(tmp_path / "run").open()
    first.close()
    _open(tmp_path / "run").close()


def test_sync_makes_the_data_readable_by_a_fresh_reader(tmp_path):
    spool = _open(tmp_path / "run")
    payload = np.random.default_rng(0).bytes(10_000)
    spool.append(1, payload)
    spool.sync()
    assert list(Spool(tmp_path / "run").records()) == [(1, payload)]


_DISK_FULL_SCRIPT = """
import resource, signal, sys
from sentrycam.capture.spool import Spool
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
spool = Spool(sys.argv[1]); spool.open()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (5000, hard))  # the "disk" holds 5000 bytes per file
written = failed = 0
for seq in range(1, 11):
    try:
        spool.append(seq, bytes([seq]) * 1000)  # 1024 bytes with the record header
        written = seq
    except OSError:
        failed += 1
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space comes back
spool.append(11, b"after")
spool.close()
print(written, failed)
"""


def test_a_full_disk_fails_the_append_without_damaging_what_was_written(tmp_path):
    out = subprocess.run([sys.executable, "-c", _DISK_FULL_SCRIPT, str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    written, failed = map(int, out.split())
    # 4 records of 1024 bytes fit in a file; each failure moves on to a new segment file
    assert (written, failed) == (9, 2)
    got = list(Spool(tmp_path / "run").records())
    assert [s for s, _ in got] == [1, 2, 3, 4, 6, 7, 8, 9, 11]
    assert got[-1][1] == b"after" and got[0][1] == b"\x01" * 1000


def test_a_segment_holding_only_a_torn_first_record_is_removed_on_open(tmp_path):
    spool = _open(tmp_path / "run")
    spool.append(1, _frame(1))
    spool.close()
    torn = tmp_path / "run" / "00000000000000000002.seg"
    torn.write_bytes(RECORD_HEADER.pack(b"SREC", 2, 500, 0) + b"cut")
    reopened = _open(tmp_path / "run")
    assert not torn.exists() and reopened.last_seq == 1
    reopened.ack(1)
    reopened.close()
    assert not (tmp_path / "run").exists()
