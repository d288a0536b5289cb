"""Fixtures of the backend tests (the server helper itself is in tests/servers.py).

Fixtures here: ``store`` (a real DuckDB file in tmp_path), ``server`` (the app serving that
store), and ``make_settings`` (ServerSettings for tmp_path with overrides).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.store import Store
from tests.servers import RunningServer, serve_in_thread



@pytest.fixture(autouse=True)
def _no_sentrycam_environment(monkeypatch):
    """Settings come only from the test: a SENTRYCAM_TOKEN in the caller's shell must not leak in."""
    for name in [n for n in os.environ if n.startswith("SENTRYCAM_")]:
        monkeypatch.delenv(name)
    # The projector worker compiles numba for ~25 s of CPU: only the tests that ask get one.
    monkeypatch.setenv("SENTRYCAM_PROJECTOR", "off")


@pytest.fixture
def make_settings(tmp_path: Path):
    def make(**overrides: Any) -> ServerSettings:
        return ServerSettings(**{"db_path": tmp_path / "runs.duckdb", "port": 0, **overrides})
    return make


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "runs.duckdb") as opened:
        yield opened


@pytest.fixture
def server(make_settings, store) -> Iterator[RunningServer]:
    with serve_in_thread(make_settings(), store) as running:
        yield running
