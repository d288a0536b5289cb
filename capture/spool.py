"""Append-only disk spool of encoded frames, for when the server cannot be reached.

Layout: one folder per run (``<spool_dir>/<run_id>/``) holding segment files named after the
sequence number of their first record (``00000000000000000042.seg``) and a ``.lock`` file that
one process at a time holds (``fcntl.flock``). A segment is a run of records::

    offset  size  content
    0       4     magic b"SREC"
    4       8     seq (uint64, little endian)
    12      8     frame length L (uint64)
    20      4     CRC-32 of the frame
    24      L     the frame (see :mod:`sentrycam.protocol.wire`)

Records only ever get appended, with strictly increasing ``seq``. A record cut short by a
crash (or one whose CRC does not match) ends its segment: readers skip the rest of that
segment, and a writer never appends to a segment it did not create. Data is fsync'd on
:meth:`Spool.sync` (flush and close of the transport) and when a segment fills up, not per
record. Whole segments are deleted once every record in them is acknowledged.

The spool is used by one thread at a time (the sender thread); it has no internal locking.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

try:  # advisory locks exist on POSIX only; elsewhere two processes must not share a spool
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

RECORD_MAGIC = b"SREC"
RECORD_HEADER = struct.Struct("<4sQQI")
SEGMENT_SUFFIX = ".seg"
LOCK_NAME = ".lock"
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class SpoolLockedError(RuntimeError):
    """Another process holds this spool folder (a running trainer or another replay)."""


class _TornRecord(Exception):
    """The bytes at the read position are not a whole, valid record."""


def _segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def _read_record(f: BinaryIO) -> tuple[int, bytes] | None:
    """Read one record at the file position: (seq, frame), None at a clean end of file.

    Raises :class:`_TornRecord` when the record is cut short or corrupt.
    """
    head = f.read(RECORD_HEADER.size)
    if not head:
        return None
    if len(head) < RECORD_HEADER.size:
        raise _TornRecord("record header cut short")
    magic, seq, length, crc = RECORD_HEADER.unpack(head)
    if magic != RECORD_MAGIC:
        raise _TornRecord("bad record magic")
    frame = f.read(length)
    if len(frame) < length:
        raise _TornRecord(f"record of seq {seq} cut short ({len(frame)} of {length} bytes)")
    if zlib.crc32(frame) != crc:
        raise _TornRecord(f"record of seq {seq} fails its CRC check")
    return seq, frame


def _open_private(path: Path, mode: str) -> BinaryIO:
    """Open ``path`` to write (``"wb"``: truncate, ``"ab"``: append), created readable and
    writable by its owner only."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, PRIVATE_FILE_MODE), mode)


def _fsync_dir(directory: Path) -> None:
    """Make file creations and deletions in ``directory`` durable (POSIX only)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the data files are synced anyway
    finally:
        os.close(fd)


class Spool:
    """The spool of one run, in ``directory``. Call :meth:`open` before :meth:`append`."""

    def __init__(self, directory: str | os.PathLike[str], *,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self._lock_file: BinaryIO | None = None
        self._writer: BinaryIO | None = None
        self._writer_first = 0
        self._writer_size = 0
        #: Highest seq of a valid record written so far (0: none). Read back at creation.
        self.last_seq = self._scan_last_seq()

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Create the folder and take its lock. Raises :class:`SpoolLockedError` or ``OSError``."""
        if self._lock_file is not None:
            return
        # Owner only (0700 folders, 0600 files): the frames are the run's data.
        self.directory.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        self.directory.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        lock_file = _open_private(self.directory / LOCK_NAME, "ab")
        if fcntl is not None:
            try:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock_file.close()
                raise SpoolLockedError(
                    f"spool folder {self.directory} is in use by another process; "
                    "wait for it to finish or use another spool folder") from None
        self._lock_file = lock_file
        # Holding the lock, trailing segments without one valid record (a crash during their
        # first write) can go: they would otherwise never be acknowledged and deleted.
        self.last_seq = self._scan_last_seq(remove_empty=True)

    def close(self) -> None:
        """Sync and release. An empty spool folder (everything acknowledged) is removed."""
        self.sync()
        self._close_writer()
        if self._lock_file is not None:
            if not self.segments():
                self._remove_empty_folder()
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    def _remove_empty_folder(self) -> None:
        try:
            (self.directory / LOCK_NAME).unlink()
            self.directory.rmdir()
        except OSError:
            pass  # something else lives there; leaving an empty folder behind is harmless

    # -- writing ---------------------------------------------------------------------------

    def append(self, seq: int, frame: bytes) -> None:
        """Append one record. Raises ``OSError`` (disk full, unwritable) with nothing half-written
        left where the next record goes, and ``ValueError`` if ``seq`` does not increase."""
        if self._lock_file is None:
            raise RuntimeError("Spool.append called before Spool.open")
        if seq <= self.last_seq:
            raise ValueError(f"spool records must have increasing seq: {seq} after {self.last_seq}")
        if self._writer is None or self._writer_size >= self.segment_bytes:
            self._start_segment(seq)
        assert self._writer is not None
        head = RECORD_HEADER.pack(RECORD_MAGIC, seq, len(frame), zlib.crc32(frame))
        try:
            self._writer.write(head)
            self._writer.write(frame)
            self._writer.flush()  # to the OS, so a reader in this process sees whole records
        except OSError:
            self._abandon_segment()
            raise
        self._writer_size += len(head) + len(frame)
        self.last_seq = seq

    def _start_segment(self, first_seq: int) -> None:
        self._close_writer(fsync=True)
        path = self.directory / _segment_name(first_seq)
        # A file of that name can only be the torn leftover of a crash (its first record
        # never became valid, else last_seq would be past it), so overwriting it loses nothing.
        self._writer = _open_private(path, "wb")
        self._writer_first = first_seq
        self._writer_size = 0

    def _abandon_segment(self) -> None:
        """After a failed write: cut the segment back to its last whole record, stop using it."""
        path = self.directory / _segment_name(self._writer_first)
        good_size = self._writer_size
        try:
            self._writer.close()  # type: ignore[union-attr]
        except OSError:
            pass
        self._writer = None
        try:
            os.truncate(path, good_size)
        except OSError:
            pass  # readers stop at the torn record; the next append starts a new segment

    def _close_writer(self, fsync: bool = False) -> None:
        if self._writer is None:
            return
        try:
            self._writer.flush()
            if fsync:
                os.fsync(self._writer.fileno())
        finally:
            self._writer.close()
            self._writer = None

    def sync(self) -> None:
        """Make everything appended so far durable (fsync of the segment and the folder)."""
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())
        if self.directory.is_dir():
            _fsync_dir(self.directory)

    # -- reading and deleting --------------------------------------------------------------

    def segments(self) -> list[tuple[int, Path]]:
        """Segment files as (first seq, path), oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.glob("*" + SEGMENT_SUFFIX):
            try:
                found.append((int(path.name[: -len(SEGMENT_SUFFIX)]), path))
            except ValueError:
                logger.warning("ignoring unexpected file %s in the spool", path)
        return sorted(found)

    def reader(self, after_seq: int = 0) -> SpoolReader:
        """A cursor over the records with seq > ``after_seq``, that also sees later appends."""
        return SpoolReader(self, after_seq)

    def records(self, after_seq: int = 0) -> Iterator[tuple[int, bytes]]:
        """Every readable record with seq > ``after_seq``, oldest first."""
        cursor = self.reader(after_seq)
        while batch := cursor.next_batch(max_records=64, max_bytes=64 * 1024 * 1024):
            yield from batch

    def ack(self, seq: int) -> int:
        """Delete the segments whose records all have seq <= ``seq``. Returns how many."""
        segments = self.segments()
        deleted = 0
        for index, (first, path) in enumerate(segments):
            is_last = index + 1 == len(segments)
            highest = self.last_seq if is_last else segments[index + 1][0] - 1
            if highest > seq:
                break
            if self._writer is not None and first == self._writer_first:
                self._close_writer()
            path.unlink(missing_ok=True)
            deleted += 1
        return deleted

    def _flush_writer(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def _scan_last_seq(self, remove_empty: bool = False) -> int:
        """The seq of the last valid record on disk (segments after a crash may end torn)."""
        for _first, path in reversed(self.segments()):
            last = 0
            try:
                with open(path, "rb") as f:
                    while (record := _read_record(f)) is not None:
                        last = record[0]
            except _TornRecord:
                pass
            except OSError as exc:
                logger.warning("cannot read spool segment %s: %s", path, exc)
            if last:
                return last
            if remove_empty:
                path.unlink(missing_ok=True)
        return 0


class SpoolReader:
    """Reads a spool in order from a remembered position; picks up records appended later."""

    def __init__(self, spool: Spool, after_seq: int) -> None:
        self._spool = spool
        #: seq of the last record returned (or the starting point).
        self.last_seq = after_seq
        self._segment: int | None = None
        self._offset = 0
        self._segment_done = False

    def next_batch(self, max_records: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Up to ``max_records`` records (and about ``max_bytes``; at least one), oldest first.

        An empty list means everything written so far has been read.
        """
        self._spool._flush_writer()
        batch: list[tuple[int, bytes]] = []
        size = 0
        for first, path in self._spool.segments():
            if self._segment is not None and first < self._segment:
                continue
            if first != self._segment:
                self._segment, self._offset, self._segment_done = first, 0, False
            if self._segment_done:
                continue
            size = self._read_segment(path, batch, size, max_records, max_bytes)
            if len(batch) >= max_records or size >= max_bytes:
                break
        return batch

    def _read_segment(self, path: Path, batch: list[tuple[int, bytes]], size: int,
                      max_records: int, max_bytes: int) -> int:
        """Append this segment's records from the current offset to ``batch``; returns bytes."""
        try:
            with open(path, "rb") as f:
                f.seek(self._offset)
                while len(batch) < max_records and size < max_bytes:
                    record = _read_record(f)
                    if record is None:
                        break
                    self._offset = f.tell()
                    seq, frame = record
                    if seq > self.last_seq:
                        batch.append(record)
                        size += len(frame)
                        self.last_seq = seq
        except FileNotFoundError:
            self._segment_done = True  # deleted after an ack while we were behind it
        except _TornRecord as exc:
            logger.warning("spool segment %s ends with a damaged record (%s); "
                           "the rest of that segment is skipped", path, exc)
            self._segment_done = True
        return size


def spooled_runs(spool_dir: str | os.PathLike[str]) -> list[Path]:
    """Run folders under ``spool_dir`` that hold segment files, sorted by name."""
    root = Path(spool_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and any(p.glob("*" + SEGMENT_SUFFIX)))
