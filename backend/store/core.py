"""The :class:`Store`: one DuckDB file, opened by one process, used from many threads.

DuckDB lets one process hold a file read-write and locks every other process out, so the
server owns the file and everybody else reads through the server's API. When no server holds
it, ``sentrycam inspect``/``export`` open it with ``read_only=True``.

Threads: :meth:`Store.write` runs under a lock on the store's own writer cursor, one
transaction per batch; every read makes a fresh cursor, so reads run while a write is under
way and see only committed batches.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import threading
from typing import Iterator, Sequence

import duckdb
import numpy as np

from sentrycam.capture.messages import Message
from sentrycam.backend.store import export, reader, schema
from sentrycam.backend.store.errors import (StoreClosedError, StoreLockedError,
                                            StoreReadOnlyError)
from sentrycam.backend.store.validate import validate_batch
from sentrycam.backend.store.writer import BatchWriter, RetentionSettings

logger = logging.getLogger(__name__)


def _connect(path: pathlib.Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open the file, turning DuckDB's errors into ones that say what to do."""
    if read_only and not path.exists():
        raise FileNotFoundError(f"no sentrycam store at {path}; check the --db path (a "
                                "read-only open never creates a file)")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise StoreLockedError(
                f"cannot open {path}: another process holds it ({exc}). A sentrycam server "
                "probably holds it; use --url http://HOST:PORT to read through that server, "
                "or stop that server") from None
        raise ValueError(f"cannot open {path} as a DuckDB database ({exc}); give a new file "
                         "name or a file written by sentrycam") from None


class Store:
    """The DuckDB store of every run (schema in docs/schema.md).

    ``Store(path)`` creates the file and its tables when needed and migrates an older file
    forward; ``read_only=True`` opens an existing, current file for reading only.
    ``retention`` limits how many snapshots keep their feature vectors.
    """

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False,
                 retention: RetentionSettings | None = None) -> None:
        if retention is not None and not isinstance(retention, RetentionSettings):
            raise TypeError("retention must be a RetentionSettings, got "
                            f"{type(retention).__name__}")
        self.path = pathlib.Path(path)
        self.read_only = bool(read_only)
        self.retention = retention or RetentionSettings()
        self._write_lock = threading.Lock()
        self._closed = False
        self._con = _connect(self.path, self.read_only)
        try:
            with self._cursor() as cur:
                self.schema_version = schema.prepare(cur, str(self.path), read_only=self.read_only)
            self._writer = None if self.read_only else self._con.cursor()
        except BaseException:
            self._con.close()
            raise
        logger.debug("opened store %s (read_only=%s, schema %d)", self.path, self.read_only,
                     self.schema_version)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the file (waits for a write under way). Idempotent."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if self._writer is not None:
                self._writer.close()
            self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self.read_only else "read-write")
        return f"Store({str(self.path)!r}, {state})"

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh cursor for one call: DuckDB cursors must not be shared between threads."""
        if self._closed:
            raise StoreClosedError(f"the store {self.path} is closed; open a new Store")
        cur = self._con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    # ------------------------------------------------------------------ writing

    def write(self, batch: Sequence[tuple[int, Message]], *,
              stored: list[Message] | None = None) -> dict[str, int]:
        """Store a batch of ``(seq, message)`` in arrival order, in one transaction.

        A message whose seq is <= its run's stored ``last_seq`` was stored before and is
        skipped. A message of a run without a row creates a placeholder row (name = run_id).
        ``stored``, when given, receives (after the commit) the messages that were new.
        Returns {run_id: highest seq now committed} for every run in the batch. Raises
        ValueError, with nothing written, if an item is malformed.
        """
        if self.read_only:
            raise StoreReadOnlyError(f"the store {self.path} was opened read-only; writes go "
                                     "through the sentrycam server that owns the file")
        batch = list(batch)
        validate_batch(batch)
        if not batch:
            return {}
        with self._write_lock:
            if self._closed:
                raise StoreClosedError(f"the store {self.path} is closed; open a new Store")
            cur = self._writer
            cur.begin()
            try:
                batch_writer = BatchWriter(cur, self.retention)
                committed = batch_writer.write(batch)
                cur.commit()
            except BaseException:
                self._rollback(cur)
                raise
        if stored is not None:
            stored.extend(batch_writer.stored)
        return committed

    def _rollback(self, cur: duckdb.DuckDBPyConnection) -> None:
        try:
            cur.rollback()
        except duckdb.Error:
            # The first error is the one to report; a failed rollback only adds noise.
            logger.exception("rollback after a failed write to %s also failed", self.path)

    # ------------------------------------------------------------------ reading

    def run_summaries(self, run_id: str | None = None) -> list[dict]:
        """One dict per run, newest first: run_id, name, status, created_at (ISO, UTC),
        last_step, n_scalar_rows, n_snapshots, layers, n_probe, n_embeddings, n_alerts,
        dropped, capture_overhead, snapshot_every, n_events; also spooled, updated_at,
        ended_at and config (RunStart.config). Unknown run_id -> UnknownRunError."""
        with self._cursor() as cur:
            return reader.run_summaries(cur, run_id)

    def scalars(self, run_id: str, names: Sequence[str] | None = None,
                since_step: int | None = None, limit: int | None = None) -> dict[str, list]:
        """Columnar scalar rows {step, name, value, wall_time} in (step, name) order."""
        with self._cursor() as cur:
            return reader.scalars(cur, run_id, names, since_step, limit)

    def scalar_names(self, run_id: str) -> list[str]:
        with self._cursor() as cur:
            return reader.scalar_names(cur, run_id)

    def layer_stats(self, run_id: str, since_step: int | None = None) -> dict[str, list]:
        """Columnar layer statistics {step, layer, stat, value}."""
        with self._cursor() as cur:
            return reader.layer_stats(cur, run_id, since_step)

    def snapshot_index(self, run_id: str) -> list[dict]:
        """[{step, epoch, layer, n, dim, nonfinite, has_features}] in (step, layer) order."""
        with self._cursor() as cur:
            return reader.snapshot_index(cur, run_id)

    def features(self, run_id: str, step: int, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """(sample_ids int64 [N], features float16 [N, D]) in sample_id order."""
        with self._cursor() as cur:
            return reader.features(cur, run_id, step, layer)

    def predictions(self, run_id: str, step: int) -> dict[str, np.ndarray]:
        """{sample_id, pred, confidence, loss, entropy, margin} arrays [N] at one snapshot."""
        with self._cursor() as cur:
            return reader.predictions(cur, run_id, step)

    def probe(self, run_id: str) -> dict[str, np.ndarray]:
        """{sample_id int64, label int64, split uint8} arrays [N]."""
        with self._cursor() as cur:
            return reader.probe(cur, run_id)

    def events(self, run_id: str) -> list[dict]:
        with self._cursor() as cur:
            return reader.events(cur, run_id)

    def export_run(self, run_id: str, out_dir: str | os.PathLike) -> list[pathlib.Path]:
        """One Parquet file per table with the run's rows; see :mod:`.export`."""
        with self._cursor() as cur:
            return export.export_run(cur, run_id, out_dir)
