"""A file that is not a sentrycam DuckDB database is refused with a message naming it, before
DuckDB reads it; and no connection the store opens may fetch DuckDB extensions (there is no
network where sentrycam often runs, and a database file must never cause a download)."""

from __future__ import annotations

import sqlite3

import pytest

from sentrycam.backend.server import ServerStartError, run_server
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.store import Store, StoreFormatError
from sentrycam.backend.testing import isolate_environment


def _sqlite_file(path):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    con.execute("INSERT INTO invoices VALUES (1, 9.5)")
    con.commit()
    con.close()


def _text_file(path):
    path.write_text("these are not the bytes of a database\n" * 100)


def _short_file(path):
    path.write_bytes(b"DUCK")


@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize("make", [_sqlite_file, _text_file, _short_file],
                         ids=["sqlite", "text", "short"])
def test_a_foreign_file_is_refused_naming_it_and_left_unchanged(tmp_path, make, read_only):
    path = tmp_path / "runs.duckdb"
    make(path)
    before = path.read_bytes()
    with pytest.raises(StoreFormatError,
                       match=r"runs\.duckdb is not a sentrycam DuckDB database"):
        Store(path, read_only=read_only)
    assert path.read_bytes() == before
    assert not any(p.name.endswith(".wal") for p in tmp_path.iterdir())


def test_a_refused_sqlite_file_is_named_as_one_and_still_readable(tmp_path):
    path = tmp_path / "app.db"
    _sqlite_file(path)
    with pytest.raises(StoreFormatError, match=r"app\.db .*\(it is a SQLite database\)"):
        Store(path)
    con = sqlite3.connect(path)
    assert con.execute("SELECT id, total FROM invoices").fetchall() == [(1, 9.5)]
    con.close()


@pytest.mark.parametrize("read_only", [False, True])
def test_every_store_connection_has_extension_autoload_and_autoinstall_off(tmp_path, read_only):
    path = tmp_path / "runs.duckdb"
    Store(path).close()
    with Store(path, read_only=read_only) as store:
        con = store._con  # what every cursor of the store inherits
        settings = {name: con.execute(f"SELECT current_setting('{name}')").fetchone()[0]
                    for name in ("autoinstall_known_extensions", "autoload_known_extensions")}
    assert settings == {"autoinstall_known_extensions": False,
                        "autoload_known_extensions": False}


def test_serving_a_foreign_db_fails_to_start_naming_the_file(tmp_path, monkeypatch):
    isolate_environment(monkeypatch)
    path = tmp_path / "app.sqlite"
    _sqlite_file(path)
    with pytest.raises(ServerStartError, match=r"app\.sqlite is not a sentrycam DuckDB database"):
        run_server(ServerSettings(db_path=path, port=0))
