"""The scenario harness's server for the audit tests that train real runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.testing import serve_in_thread

#: benchmarks/ (scenarios.py, scenario_plan.py...) importable by the tests of real runs.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))


@pytest.fixture(scope="module")
def scenario_server(tmp_path_factory):
    """One in-process server per test module, without the projector (no 2D maps needed)."""
    settings = ServerSettings(db_path=tmp_path_factory.mktemp("runs") / "runs.duckdb", port=0,
                              projector=False)
    with serve_in_thread(settings) as running:
        yield running
