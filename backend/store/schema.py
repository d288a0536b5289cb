"""Tables of the store, its schema version, and the forward migrations between versions.

The file's version lives in ``schema_meta`` under the key ``"schema_version"``. A file made
before ``schema_meta`` existed (it has a ``runs`` table but no ``schema_meta``) is version 0.
``MIGRATIONS[i]`` turns a version ``i`` file into a version ``i + 1`` file; opening a file
read-write applies every step from the file's version up to :data:`SCHEMA_VERSION`, each
in its own transaction. docs/schema.md describes every column.

Indexes: only ``runs.run_id`` and ``alerts.alert_id`` carry a primary key. Every other table is
read by ``run_id`` (and step/layer) ranges, which DuckDB answers from its per-row-group
min/max zone maps; an ART index would slow the bulk inserts of features (hundreds of
thousands of rows per second) and DuckDB only uses one for highly selective point lookups.
Tables that a write replaces (delete, then insert again) have no key on purpose.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import duckdb
import numpy as np
import pyarrow as pa

from sentrycam.backend.store.errors import StoreVersionError
from sentrycam.protocol.messages import END_STATUSES, KNOWN_OUTPUTS

logger = logging.getLogger(__name__)

#: Version of the store's schema written by this code. 2: the pending_* tables that hold a
#: snapshot sent in row chunks until all its rows are in.
SCHEMA_VERSION = 2

#: A run is "running" until its RunEnd says how it ended.
RUN_STATUSES = ("running", *END_STATUSES)

_RUNS = """
CREATE TABLE runs (
    run_id           VARCHAR PRIMARY KEY,
    name             VARCHAR NOT NULL,
    status           VARCHAR NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'finished', 'detached', 'failed')),
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    ended_at         TIMESTAMP,
    config           JSON,
    last_step        BIGINT,
    last_seq         BIGINT NOT NULL DEFAULT -1,
    dropped          BIGINT NOT NULL DEFAULT 0,
    spooled          BIGINT NOT NULL DEFAULT 0,
    capture_overhead DOUBLE,
    snapshot_every   BIGINT
)"""

_PROBE_SAMPLES = """
CREATE TABLE probe_samples (
    run_id    VARCHAR NOT NULL,
    sample_id BIGINT NOT NULL,
    label     BIGINT NOT NULL,
    split     UTINYINT NOT NULL
)"""

_SCALARS = """
CREATE TABLE scalars (
    run_id    VARCHAR NOT NULL,
    step      BIGINT NOT NULL,
    name      VARCHAR NOT NULL,
    value     DOUBLE,
    wall_time DOUBLE
)"""

_LAYER_STATS = """
CREATE TABLE layer_stats (
    run_id VARCHAR NOT NULL,
    step   BIGINT NOT NULL,
    layer  VARCHAR NOT NULL,
    stat   VARCHAR NOT NULL,
    value  DOUBLE
)"""

_SNAPSHOTS = """
CREATE TABLE snapshots (
    run_id       VARCHAR NOT NULL,
    step         BIGINT NOT NULL,
    epoch        BIGINT,
    layer        VARCHAR NOT NULL,
    n            BIGINT NOT NULL,
    dim          BIGINT NOT NULL,
    nonfinite    BIGINT NOT NULL DEFAULT 0,
    has_features BOOLEAN NOT NULL DEFAULT true,
    created_at   TIMESTAMP NOT NULL
)"""

_FEATURES = """
CREATE TABLE features (
    run_id    VARCHAR NOT NULL,
    step      BIGINT NOT NULL,
    layer     VARCHAR NOT NULL,
    sample_id BIGINT NOT NULL,
    vec       BLOB NOT NULL
)"""

_PREDICTIONS = """
CREATE TABLE predictions (
    run_id     VARCHAR NOT NULL,
    step       BIGINT NOT NULL,
    sample_id  BIGINT NOT NULL,
    pred       BIGINT,
    confidence REAL,
    loss       REAL,
    entropy    REAL,
    margin     REAL
)"""

#: Names of ``Snapshot.outputs`` stored in ``predictions``, with their Arrow types.
PREDICTION_COLUMNS: dict[str, pa.DataType] = {
    name: pa.from_numpy_dtype(np.dtype(dtype)) for name, dtype in KNOWN_OUTPUTS.items()}

_EMBEDDINGS = """
CREATE TABLE embeddings (
    run_id    VARCHAR NOT NULL,
    step      BIGINT NOT NULL,
    layer     VARCHAR NOT NULL,
    sample_id BIGINT NOT NULL,
    x         REAL,
    y         REAL
)"""

_PROJECTOR_CHECKPOINTS = """
CREATE TABLE projector_checkpoints (
    run_id     VARCHAR NOT NULL,
    layer      VARCHAR NOT NULL,
    step       BIGINT NOT NULL,
    state      BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL
)"""

_PROJECTION_QUALITY = """
CREATE TABLE projection_quality (
    run_id VARCHAR NOT NULL,
    step   BIGINT NOT NULL,
    layer  VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    value  DOUBLE
)"""

_ALERT_ID_SEQUENCE = "CREATE SEQUENCE alert_id_seq START 1"

_ALERTS = """
CREATE TABLE alerts (
    alert_id     BIGINT PRIMARY KEY DEFAULT nextval('alert_id_seq'),
    run_id       VARCHAR NOT NULL,
    step         BIGINT NOT NULL,
    detector     VARCHAR NOT NULL,
    layer        VARCHAR,
    severity     INTEGER NOT NULL CHECK (severity BETWEEN 0 AND 3),
    magnitude    DOUBLE,
    duration     BIGINT,
    evidence     JSON,
    message      VARCHAR,
    suggestion   VARCHAR,
    confidence   DOUBLE,
    acknowledged BOOLEAN NOT NULL DEFAULT false,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL
)"""

_EVENTS = """
CREATE TABLE events (
    run_id    VARCHAR NOT NULL,
    step      BIGINT,
    wall_time DOUBLE,
    event     VARCHAR NOT NULL,
    message   VARCHAR,
    payload   JSON
)"""

# A snapshot sent in row chunks waits in these tables until its last chunk is in; only then
# do its rows move to snapshots, features and predictions (readers never see a part).
_PENDING_SNAPSHOTS = """
CREATE TABLE pending_snapshots (
    run_id      VARCHAR NOT NULL,
    step        BIGINT NOT NULL,
    epoch       BIGINT,
    rows_total  BIGINT NOT NULL,
    rows_stored BIGINT NOT NULL,
    layers      JSON NOT NULL,
    outputs     JSON NOT NULL,
    created_at  TIMESTAMP NOT NULL
)"""


def _pending(ddl: str, table: str) -> str:
    """The definition of ``pending_<table>``: the same columns as ``table``."""
    return ddl.replace(f"CREATE TABLE {table} (", f"CREATE TABLE pending_{table} (", 1)


_PENDING_FEATURES = _pending(_FEATURES, "features")
_PENDING_PREDICTIONS = _pending(_PREDICTIONS, "predictions")

_SCHEMA_META = """
CREATE TABLE schema_meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
)"""

#: Statements that create a current-version store from nothing, in order.
CREATE_STATEMENTS: tuple[str, ...] = (
    _SCHEMA_META, _RUNS, _PROBE_SAMPLES, _SCALARS, _LAYER_STATS, _SNAPSHOTS, _FEATURES,
    _PREDICTIONS, _EMBEDDINGS, _PROJECTOR_CHECKPOINTS, _PROJECTION_QUALITY,
    _ALERT_ID_SEQUENCE, _ALERTS, _EVENTS, _PENDING_SNAPSHOTS, _PENDING_FEATURES,
    _PENDING_PREDICTIONS,
)

#: Tables that hold rows of one run (all have a ``run_id`` column), in export order.
RUN_TABLES: tuple[str, ...] = (
    "runs", "probe_samples", "scalars", "layer_stats", "snapshots", "features", "predictions",
    "embeddings", "projector_checkpoints", "projection_quality", "alerts", "events",
)


def _migrate_0_to_1(cur: duckdb.DuckDBPyConnection) -> None:
    """Version 0 lacked the agent-health columns of runs, snapshots.has_features, the
    projector/alert tables and schema_meta."""
    for column, sql_type, default in (("spooled", "BIGINT", "0"),
                                      ("capture_overhead", "DOUBLE", None),
                                      ("snapshot_every", "BIGINT", None)):
        default_sql = f" DEFAULT {default}" if default is not None else ""
        cur.execute(f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {column} {sql_type}{default_sql}")
    cur.execute("ALTER TABLE snapshots ADD COLUMN IF NOT EXISTS has_features BOOLEAN DEFAULT true")
    # Version 0 had no retention flag: a snapshot has features exactly when rows exist for it.
    cur.execute("""
        UPDATE snapshots AS s SET has_features = EXISTS (
            SELECT 1 FROM features AS f
            WHERE f.run_id = s.run_id AND f.step = s.step AND f.layer = s.layer)""")
    # These are the version-1 definitions; a later version that changes them must keep a
    # copy of the version-1 text here.
    for ddl in (_EMBEDDINGS, _PROJECTOR_CHECKPOINTS, _PROJECTION_QUALITY, _ALERT_ID_SEQUENCE,
                _ALERTS, _SCHEMA_META):
        cur.execute(ddl)


def _migrate_1_to_2(cur: duckdb.DuckDBPyConnection) -> None:
    """Version 1 sent every snapshot whole: it lacked the pending_* tables of row chunks.
    These are the version-2 definitions (see the note in :func:`_migrate_0_to_1`)."""
    for ddl in (_PENDING_SNAPSHOTS, _PENDING_FEATURES, _PENDING_PREDICTIONS):
        cur.execute(ddl)


#: ``MIGRATIONS[i]`` migrates a version ``i`` file to version ``i + 1``.
MIGRATIONS: tuple[Callable[[duckdb.DuckDBPyConnection], None], ...] = (_migrate_0_to_1,
                                                                        _migrate_1_to_2)
assert len(MIGRATIONS) == SCHEMA_VERSION, "one migration per version step"


def first_row(cur: duckdb.DuckDBPyConnection, sql: str,
              params: list[Any] | dict[str, Any] | None = None) -> tuple | None:
    """The first row of a query, or None. Reads the result to its end: DuckDB 2.0 refuses
    other work on a cursor whose execute() result is unfinished (as fetchone() leaves it)."""
    result = cur.execute(sql, params) if params is not None else cur.execute(sql)
    rows = result.fetchall()
    return rows[0] if rows else None


def _table_names(cur: duckdb.DuckDBPyConnection) -> set[str]:
    rows = cur.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()
    return {name for (name,) in rows}


def file_version(cur: duckdb.DuckDBPyConnection, path: str) -> int | None:
    """The schema version of an open file: None for a file with no tables at all (new).

    Raises :class:`StoreVersionError` for a DuckDB file that is not a sentrycam store.
    """
    tables = _table_names(cur)
    if not tables:
        return None
    if "schema_meta" in tables:
        row = first_row(cur, "SELECT value FROM schema_meta WHERE key = 'schema_version'")
        if row is None:
            raise StoreVersionError(f"{path} has a schema_meta table without a schema_version "
                                    "entry; it was not written by sentrycam or is damaged")
        return int(row[0])
    if "runs" in tables:
        return 0
    raise StoreVersionError(
        f"{path} is a DuckDB file but not a sentrycam store (tables: {sorted(tables)}); "
        "give sentrycam a new file name or the file a sentrycam server wrote")


def _set_version(cur: duckdb.DuckDBPyConnection, version: int) -> None:
    cur.execute("INSERT OR REPLACE INTO schema_meta (key, value) VALUES ('schema_version', ?)",
                [str(version)])


def _in_transaction(cur: duckdb.DuckDBPyConnection, work: Callable[[], None]) -> None:
    cur.begin()
    try:
        work()
        cur.commit()
    except BaseException:
        cur.rollback()
        raise


def _create(cur: duckdb.DuckDBPyConnection) -> None:
    for ddl in CREATE_STATEMENTS:
        cur.execute(ddl)
    _set_version(cur, SCHEMA_VERSION)


def _migrate(cur: duckdb.DuckDBPyConnection, version: int, path: str) -> None:
    for start in range(version, SCHEMA_VERSION):
        logger.info("migrating store %s from schema version %d to %d", path, start, start + 1)

        def step(start: int = start) -> None:
            MIGRATIONS[start](cur)
            _set_version(cur, start + 1)

        _in_transaction(cur, step)


def prepare(cur: duckdb.DuckDBPyConnection, path: str, *, read_only: bool) -> int:
    """Create or migrate the schema of an open file; return its (now current) version.

    A read-only file must already be at :data:`SCHEMA_VERSION` since it cannot be changed.
    """
    version = file_version(cur, path)
    if version is not None and version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"{path} has store schema version {version}, but this sentrycam understands up to "
            f"version {SCHEMA_VERSION}; upgrade sentrycam (pip install -U sentrycam) to open it")
    if version == SCHEMA_VERSION:
        return version
    if read_only:
        what = "no sentrycam tables" if version is None else f"store schema version {version}"
        raise StoreVersionError(
            f"{path} has {what} and a read-only open cannot create or migrate it; open it "
            "read-write once (for example `sentrycam serve --db FILE`) to bring it to version "
            f"{SCHEMA_VERSION}")
    if version is None:
        _in_transaction(cur, lambda: _create(cur))
    else:
        _migrate(cur, version, path)
    return SCHEMA_VERSION
