"""Fixtures of the backend tests (the server helper itself is in sentrycam.backend.testing).

Fixtures here: ``store`` (a real DuckDB file in tmp_path), ``server`` (the app serving that
store), and ``make_settings`` (ServerSettings for tmp_path with overrides).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.testing import RunningServer, isolate_environment, serve_in_thread



@pytest.fixture(autouse=True)
def _no_sentrycam_environment(monkeypatch):
    isolate_environment(monkeypatch)


@pytest.fixture
def make_settings(tmp_path: Path):
    def make(**overrides: Any) -> ServerSettings:
        return ServerSettings(**{"db_path": tmp_path / "runs.duckdb", "port": 0, **overrides})
    return make


@pytest.fixture
def server(make_settings, store) -> Iterator[RunningServer]:
    with serve_in_thread(make_settings(), store) as running:
        yield running
