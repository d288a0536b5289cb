"""Suite-wide test settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from sentrycam.backend.store import Store

# Fixtures of a real in-process server fed through its ingest websocket (server, ingest,
# make_settings), for the backend, frontend and capture tests alike.
pytest_plugins = ["tests.live_server"]


@pytest.fixture(autouse=True, scope="session")
def _projector_off_unless_asked():
    """Servers started by tests (in-process or as child processes) run without the projector
    worker, whose numba warm-up costs ~25 s of CPU; projector tests switch it on explicitly."""
    previous = os.environ.get("SENTRYCAM_PROJECTOR")
    os.environ.setdefault("SENTRYCAM_PROJECTOR", "off")
    yield
    if previous is None:
        os.environ.pop("SENTRYCAM_PROJECTOR", None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real DuckDB store in the test's folder (``runs.duckdb``)."""
    with Store(tmp_path / "runs.duckdb") as opened:
        yield opened

