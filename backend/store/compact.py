"""Compaction: apply the retention policy to a store file and shrink the file.

Deleting rows frees room inside a DuckDB file but never shrinks it: measured on DuckDB 2.0, a
15.2 MiB file of feature vectors stays 16,003,072 bytes after deleting five sixths of its rows,
after CHECKPOINT, after VACUUM, after closing and after FORCE CHECKPOINT on reopening; copying
its rows into a new file (``COPY FROM DATABASE``) gives 3,158,016 bytes. So compaction copies
the store into ``<file>.compacting`` while it holds the file, then moves the copy over it.

Only a process that holds the file read-write can compact it, and a running server holds it:
the server applies the same policy to each run and layer as its snapshots arrive, so what a
server's store needs from ``compact`` is the shrinking, done while the server is stopped.
"""

from __future__ import annotations

import logging
import os
import pathlib
from dataclasses import dataclass

import duckdb

from sentrycam.backend.store.retention import RetentionSettings
from sentrycam.backend.store.sizes import file_bytes

logger = logging.getLogger(__name__)

_COPY = "sentrycam_copy"


@dataclass(frozen=True)
class Compaction:
    """What one compaction did: snapshots (step, layer) that lost their feature vectors, and
    the file's bytes (with its write-ahead log) before and after."""

    snapshots_dropped: int
    bytes_before: int
    bytes_after: int


def copy_database(cur: duckdb.DuckDBPyConnection, target: pathlib.Path) -> None:
    """Copy every table, sequence and row of ``cur``'s database into the new file
    ``target``; the room deleted rows left behind is not copied."""
    if target.exists():
        raise FileExistsError(f"{target} exists; the copy goes to a new file")
    source = cur.execute("SELECT current_database()").fetchone()[0].replace('"', '""')
    cur.execute(f"ATTACH ? AS {_COPY}", [str(target)])
    try:
        cur.execute(f'COPY FROM DATABASE "{source}" TO {_COPY}')
        cur.execute(f"CHECKPOINT {_COPY}")
    finally:
        cur.execute(f"DETACH {_COPY}")


def _on_disk(path: pathlib.Path) -> int:
    return sum(file_bytes(path).values())


def compact_file(path: str | os.PathLike, policy: RetentionSettings,
                 run_id: str | None = None, *, memory_limit: str | None = None) -> Compaction:
    """Apply ``policy`` to one run (its id) or every run of the store file ``path``, then
    rewrite the file without the room the deleted rows left. Raises StoreLockedError while
    another process (a server) holds the file."""
    from sentrycam.backend.store.core import Store  # the Store uses this module's copy

    path = pathlib.Path(path)
    before = _on_disk(path)
    staging = path.with_name(path.name + ".compacting")
    for leftover in (staging, pathlib.Path(f"{staging}.wal")):  # of a compaction cut short
        leftover.unlink(missing_ok=True)
    with Store(path, retention=policy, memory_limit=memory_limit) as store:
        dropped = store.apply_retention(run_id)
        store.copy_to(staging)
    if pathlib.Path(f"{path}.wal").exists():  # closing checkpoints it: this is not expected
        staging.unlink()
        raise RuntimeError(f"{path}.wal was left after closing {path}; the file is unchanged, "
                           "open and close it once with sentrycam, then compact again")
    os.replace(staging, path)  # the store is closed: no write can fall between copy and move
    after = _on_disk(path)
    logger.info("compacted %s: %d snapshots lost their feature vectors; %d -> %d bytes",
                path, dropped, before, after)
    return Compaction(dropped, before, after)
