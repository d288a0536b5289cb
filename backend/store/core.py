"""The :class:`Store`: one DuckDB file, opened by one process, used from many threads.

DuckDB lets one process hold a file read-write and locks every other process out, so the
server owns the file and everybody else reads through the server's API. When no server holds
it, ``sentrycam inspect``/``export`` open it with ``read_only=True``.

Threads: :meth:`Store.write` runs under a lock on the store's own writer cursor, one
transaction per batch; every read makes a fresh cursor, so reads run while a write is under
way and see only committed batches.

Storage failures (:mod:`.failure`: a full disk, an I/O error, DuckDB invalidating the
database) raise :class:`StoreUnavailableError` naming the cause and are remembered in
:attr:`Store.failure` until a commit works again; :meth:`Store.recover` reopens an
invalidated file and checks that it can be written. Reads keep working while DuckDB can
serve them, and raise :class:`StoreUnavailableError` while the database is invalidated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import threading
from typing import Any, Callable, Iterator, Mapping, Sequence

import duckdb
import numpy as np

from sentrycam.protocol.messages import Message
from sentrycam.backend.store import (compact, derived, export, reader, retention, schema,
                                     sizes)
from sentrycam.backend.store.connection import connect
from sentrycam.backend.store.errors import (StoreClosedError, StoreReadOnlyError,
                                            StoreUnavailableError)
from sentrycam.backend.store.failure import FailureState, StorageFailure, storage_failure
from sentrycam.protocol.validation import check_batch
from sentrycam.backend.store.retention import RetentionSettings
from sentrycam.backend.store.writer import BatchWriter, Refusal, RunRecord

logger = logging.getLogger(__name__)


class Store:
    """The DuckDB store of every run (schema in docs/schema.md).

    ``Store(path)`` creates the file and its tables when needed and migrates an older file
    forward; ``read_only=True`` opens an existing, current file for reading only.
    ``retention`` limits how many snapshots keep their feature vectors. ``memory_limit``
    (DuckDB's, e.g. ``"512MB"``) bounds the memory DuckDB keeps for its cache and queries
    (beyond it, it evicts and spills to disk); None: DuckDB's default, 80% of the RAM.
    """

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False,
                 retention: RetentionSettings | None = None,
                 memory_limit: str | None = None) -> None:
        if retention is not None and not isinstance(retention, RetentionSettings):
            raise TypeError("retention must be a RetentionSettings, got "
                            f"{type(retention).__name__}")
        self.path = pathlib.Path(path)
        self.read_only = bool(read_only)
        self.retention = retention or RetentionSettings()
        self._write_lock = threading.Lock()
        self._closed = False
        self._memory_limit = memory_limit
        self._failure = FailureState(self.path)  # set by a storage failure, ended by a commit
        self._generation = 0  # counts reopenings: a read that spans one must not see a 500
        # What the sequence rules need of each run written so far, as committed: read once,
        # then kept here (this store is the only writer of the runs table). Forgotten after
        # any failed write or reopening, to be read again.
        self._runs: dict[str, RunRecord] = {}
        self._open()
        logger.debug("opened store %s (read_only=%s, schema %d)", self.path, self.read_only,
                     self.schema_version)

    def _open(self) -> None:
        """Open the file, create or check its schema, make the writer cursor."""
        con = connect(self.path, self.read_only, self._memory_limit)
        try:
            with con.cursor() as cur:
                self.schema_version = schema.prepare(cur, str(self.path), read_only=self.read_only)
            writer = None if self.read_only else con.cursor()
        except BaseException:
            con.close()
            raise
        self._con, self._writer = con, writer

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the file (waits for a write under way). Idempotent."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            for closable in (self._writer, self._con):
                if closable is not None:
                    try:
                        closable.close()
                    except duckdb.Error as exc:  # invalidated by a storage failure
                        logger.warning("closing store %s: %s", self.path, exc)

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
        failure, generation = self._failure.current, self._generation
        if failure is not None and failure.reopen:
            raise self._failure.error()
        try:
            cur = self._con.cursor()
            try:
                yield cur
            finally:
                cur.close()
        except duckdb.Error as exc:
            failure = storage_failure(exc)
            # Only an invalidated database is the store's failure: an I/O error of one read
            # (an export to a full disk, say) belongs to that read.
            if failure is not None and failure.reopen:
                raise self._failure.note(failure) from exc
            if generation != self._generation:
                raise StoreUnavailableError(
                    f"the store {self.path} was reopened during this read; try again") from exc
            raise

    # ------------------------------------------------------------------ writing

    def write(self, batch: Sequence[tuple[int, Message]], *,
              stored: list[Message] | None = None,
              refused: list[Refusal] | None = None, checked: bool = False) -> dict[str, int]:
        """Store a batch of ``(seq, message)`` in arrival order, in one transaction.

        A message whose seq is <= its run's stored ``last_seq`` was stored before and is
        skipped. A message of a run without a row creates a placeholder row (name = run_id).
        ``stored``, when given, receives (after the commit) the messages that were new.
        ``refused``, when given (the server's ingest), turns on the sequence rules: a run
        takes only seq ``last_seq + 1`` next (its first message is seq 0) and a finished run
        nothing new; each message refused is appended to it as a :class:`Refusal` (after the
        commit). Without it (trusted local writers) any seq above ``last_seq`` is stored.
        Returns {run_id: highest seq now committed} for every run in the batch (-1: none).
        Raises ValueError, with nothing written, if an item is malformed. ``checked``: every
        item is a ``(seq, message)`` that :func:`~sentrycam.protocol.validation.parse_frame`
        returned (its checks are stricter), so they are not repeated.
        """
        self._require_writable()
        batch = list(batch)
        if not checked:
            check_batch(batch)
        if not batch:
            return {}
        batch_writer = None
        refusals: list[Refusal] | None = None if refused is None else []

        def write_batch(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
            nonlocal batch_writer
            batch_writer = BatchWriter(cur, self.retention, publish=stored is not None,
                                       known=self._runs)
            return batch_writer.write(batch, refusals)

        committed = self._transaction(
            write_batch, after_commit=lambda: self._runs.update(batch_writer.records()))
        if stored is not None:
            stored.extend(batch_writer.stored)
        if refused is not None:
            refused.extend(refusals)
        return committed

    def _require_writable(self) -> None:
        if self.read_only:
            raise StoreReadOnlyError(f"the store {self.path} was opened read-only; writes go "
                                     "through the sentrycam server that owns the file")

    def _transaction(self, work: Callable[[duckdb.DuckDBPyConnection], Any],
                     after_commit: Callable[[], None] | None = None) -> Any:
        """Run ``work(cursor)`` in one transaction on the writer cursor, under the write lock;
        then ``after_commit()``, still under the lock."""
        self._require_writable()
        with self._write_lock:
            if self._closed:
                raise StoreClosedError(f"the store {self.path} is closed; open a new Store")
            if self._failure.current is not None and self._failure.current.reopen:
                raise self._failure.error()
            cur = self._writer
            try:
                cur.begin()
                result = work(cur)
                cur.commit()
            except BaseException as exc:
                self._rollback(cur)
                self._runs.clear()
                failure = storage_failure(exc)
                if failure is None:
                    raise
                raise self._failure.note(failure) from exc
            self._failure.end()
            if after_commit is not None:
                after_commit()
        return result

    # ------------------------------------------------------------------ storage failures

    @property
    def failure(self) -> StorageFailure | None:
        """The storage failure that the last commit met, or None while commits work."""
        return self._failure.current

    def recover(self) -> bool:
        """Try to end a storage failure: reopen the file if DuckDB invalidated it (the write-
        ahead log brings back every commit; the schema is checked again), then checkpoint
        (which writes what the log holds into the file, so it needs the room that was
        missing). True when that worked (the failure is over); False keeps the failure."""
        self._require_writable()
        with self._write_lock:
            if self._closed:
                raise StoreClosedError(f"the store {self.path} is closed; open a new Store")
            try:
                if self._failure.current is not None and self._failure.current.reopen:
                    self._reopen()
                self._writer.execute("CHECKPOINT")
            except Exception as exc:  # anything at all: the failure goes on
                failure = storage_failure(exc) or StorageFailure(
                    f"reopening failed: {type(exc).__name__}: {exc}", reopen=True)
                self._failure.note(failure)
                logger.warning("store %s still cannot be written: %s", self.path, failure.reason)
                return False
            self._failure.end()
        return True

    def _reopen(self) -> None:
        """Close the invalidated connection (readers on it fail over to a 503) and open the
        file again. Called under the write lock."""
        for closable in (self._writer, self._con):
            try:
                closable.close()
            except duckdb.Error:
                pass  # an invalidated connection may refuse even that
        self._generation += 1
        self._runs.clear()
        self._open()
        self._failure.reopened()
        logger.info("reopened store %s after a storage failure", self.path)

    # ------------------------------------------------------------------ derived data

    def write_embedding(self, run_id: str, layer: str, step: int, sample_ids: np.ndarray,
                        coords: np.ndarray, checkpoint: bytes | None = None) -> None:
        """Store the 2D map of (run_id, layer, step), replacing an earlier one.

        sample_ids int64 [N]; coords float32 [N, 2]; ``checkpoint``: the projector's state as
        bytes (the newest :data:`~.derived.CHECKPOINTS_KEPT` per (run_id, layer) are kept).
        """
        self._transaction(lambda cur: derived.write_embedding(
            cur, run_id, layer, step, sample_ids, coords, checkpoint))

    def write_quality(self, run_id: str, layer: str, step: int,
                      metrics: Mapping[str, float]) -> None:
        """Store the projection-quality metrics {name: value} of (run_id, layer, step)."""
        self._transaction(lambda cur: derived.write_quality(cur, run_id, layer, step, metrics))

    def upsert_alert(self, run_id: str, alert: Mapping[str, Any],
                     alert_id: int | None = None) -> int:
        """Insert an alert (keys: :data:`~.derived.ALERT_FIELDS`) or update ``alert_id``
        (every field but its first step). Returns the alert_id."""
        return self._transaction(lambda cur: derived.upsert_alert(cur, run_id, alert, alert_id))

    def acknowledge_alert(self, alert_id: int) -> None:
        """Mark an alert acknowledged; UnknownAlertError if there is none."""
        self._transaction(lambda cur: derived.acknowledge_alert(cur, alert_id))

    def apply_retention(self, run_id: str | None = None) -> int:
        """Apply the store's retention policy to every layer of one run, or of every run
        (ingest applies it only to the layers a batch wrote). Returns how many (step, layer)
        snapshots lost their feature vectors; the file keeps its size (see :meth:`copy_to`)."""
        def work(cur: duckdb.DuckDBPyConnection) -> int:
            if run_id is not None:
                reader.require_run(cur, run_id)
            return retention.apply(cur, self.retention,
                                   retention.stored_run_layers(cur, run_id))
        return self._transaction(work)

    def copy_to(self, target: str | os.PathLike) -> None:
        """Write the store's tables and rows into the new file ``target``, without the room
        deleted rows leave (see :func:`.compact.copy_database`)."""
        self._require_writable()
        with self._write_lock, self._cursor() as cur:
            compact.copy_database(cur, pathlib.Path(target))

    def _rollback(self, cur: duckdb.DuckDBPyConnection) -> None:
        try:
            cur.rollback()
        except duckdb.Error as exc:
            # The first error is the one to report; a failed rollback only adds noise (and a
            # failed commit has rolled back already: "no transaction is active").
            logger.debug("rollback after a failed write to %s also failed: %s", self.path, exc)

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

    def embedding_index(self, run_id: str) -> list[dict]:
        """[{step, layer, n}] of the stored 2D maps in (step, layer) order."""
        with self._cursor() as cur:
            return derived.embedding_index(cur, run_id)

    def embedding(self, run_id: str, layer: str, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(sample_ids int64 [N], coords float32 [N, 2]) in sample_id order."""
        with self._cursor() as cur:
            return derived.embedding(cur, run_id, layer, step)

    def embedding_trails(self, run_id: str, layer: str,
                         sample_ids: Sequence[int]) -> dict[str, np.ndarray]:
        """{sample_id, step, x, y} arrays [M] of every stored position of the samples."""
        with self._cursor() as cur:
            return derived.embedding_trails(cur, run_id, layer, sample_ids)

    def projection_quality(self, run_id: str, layer: str | None = None) -> dict[str, list]:
        """Columnar {step, layer, metric, value}."""
        with self._cursor() as cur:
            return derived.projection_quality(cur, run_id, layer)

    def latest_checkpoint(self, run_id: str, layer: str) -> tuple[int, bytes] | None:
        """(step, state bytes) of the newest projector checkpoint of (run_id, layer)."""
        with self._cursor() as cur:
            return derived.latest_checkpoint(cur, run_id, layer)

    def alerts(self, run_id: str | None = None, min_severity: int = 0) -> list[dict]:
        """Alerts (all columns) in (step, alert_id) order, of one run or all."""
        with self._cursor() as cur:
            return derived.alerts(cur, run_id, min_severity)

    def storage(self, run_id: str | None = None) -> dict[str, Any]:
        """Bytes held (:func:`.sizes.storage`): file_bytes, wal_bytes; runs: {run_id: {...}};
        with ``run_id`` its snapshots [{step, layers, feature_bytes, other_bytes, ...}]."""
        with self._cursor() as cur:
            if run_id is not None:
                reader.require_run(cur, run_id)
            return sizes.storage(cur, self.path, run_id)

    def export_run(self, run_id: str, out_dir: str | os.PathLike) -> list[pathlib.Path]:
        """One Parquet file per table with the run's rows; see :mod:`.export`."""
        with self._cursor() as cur:
            return export.export_run(cur, run_id, out_dir)
