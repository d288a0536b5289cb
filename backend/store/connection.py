"""Opening the store's DuckDB file: offline (no extension is ever fetched), foreign files
refused before DuckDB reads them, DuckDB's errors turned into ones that say what to do."""

from __future__ import annotations

import pathlib

import duckdb

from sentrycam.backend.store.errors import StoreFormatError, StoreLockedError

#: Set on every connection before the file is read: DuckDB would otherwise fetch extensions
#: from the internet when it meets a file one of them reads (a SQLite database, say).
OFFLINE_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
#: A DuckDB file starts with a checksum (8 bytes), then these magic bytes.
DUCKDB_MAGIC, DUCKDB_MAGIC_AT = b"DUCK", 8
#: The first bytes of a SQLite database, the foreign file most often mistaken for one.
SQLITE_MAGIC = b"SQLite format 3\x00"


def refuse_foreign_file(path: pathlib.Path) -> None:
    """Raise StoreFormatError for an existing, non-empty file that is not a DuckDB database,
    before DuckDB reads it. A missing or unreadable file is left to DuckDB to report."""
    try:
        with open(path, "rb") as file:
            head = file.read(max(DUCKDB_MAGIC_AT + len(DUCKDB_MAGIC), len(SQLITE_MAGIC)))
    except OSError:
        return
    if not head or head[DUCKDB_MAGIC_AT:DUCKDB_MAGIC_AT + len(DUCKDB_MAGIC)] == DUCKDB_MAGIC:
        return
    what = ("it is a SQLite database" if head.startswith(SQLITE_MAGIC)
            else f"it does not start with DuckDB's file header but with {head[:12]!r}")
    raise StoreFormatError(f"{path} is not a sentrycam DuckDB database ({what}); give --db a "
                           "new file name or a file written by sentrycam")


def connect(path: pathlib.Path, read_only: bool,
             memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """Open the file, turning DuckDB's errors into ones that say what to do."""
    if read_only and not path.exists():
        raise FileNotFoundError(f"no sentrycam store at {path}; check the --db path (a "
                                "read-only open never creates a file)")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    refuse_foreign_file(path)
    try:
        limit = {"memory_limit": memory_limit} if memory_limit else {}
        return duckdb.connect(str(path), read_only=read_only, config={**OFFLINE_CONFIG, **limit})
    except duckdb.InvalidInputException as exc:
        raise ValueError(f"cannot open {path} with memory_limit {memory_limit!r}: {exc}") from None
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise StoreLockedError(
                f"cannot open {path}: another process holds it ({exc}). A sentrycam server "
                "probably holds it; use --url http://HOST:PORT to read through that server, "
                "or stop that server") from None
        raise ValueError(f"cannot open {path} as a DuckDB database ({exc}); give a new file "
                         "name or a file written by sentrycam") from None
