"""Suite-wide test settings, and the guard of the fast tier.

Two tiers: ``make test`` runs everything; ``make test-fast`` (``pytest -m "not slow"``) leaves
out tests marked ``slow``: those that start server processes or browsers, train for a while or
run the projector's numba code. ``browser`` and ``projector`` tests are slow by definition (the
marks below add ``slow`` to them), and a test outside the slow tier that loads numba fails with a
request to mark it, so the fast tier cannot silently grow a warm-up of ~25 s per process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

from sentrycam.backend.store import Store

# Fixtures of a real in-process server fed through its ingest websocket (server, ingest,
# make_settings), of real server processes (server_process) and of a dashboard on a fed server
# (dashboard), for every folder.
pytest_plugins = ["tests.live_server", "tests.server_process", "tests.frontend.dashboards"]

#: Marks that put a test in the slow tier (see the module doc; registered in pyproject.toml).
SLOW_BY_NATURE = ("browser", "projector")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(name) for name in SLOW_BY_NATURE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fast_tier_stays_fast(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test outside the slow tier that loads numba (the projector's pynndescent and
    UMAP code: a JIT warm-up of ~25 s per process)."""
    loaded_before = "numba" in sys.modules
    yield
    if not loaded_before and "numba" in sys.modules and not request.node.get_closest_marker(
            "slow"):
        pytest.fail("this test loads numba (the projector's JIT code): mark it "
                    "@pytest.mark.projector so it runs in the slow tier only", pytrace=False)


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

