"""The dashboard tests' fixture and helper: the dashboard of a run on a real server (``server``
and ``ingest`` from :mod:`tests.live_server`) whose maps are written as the projector worker
writes them. Registered as a pytest plugin by the root conftest."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterator

import pytest

from sentrycam.frontend.client import ApiClient
from tests.live_server import RUN, project, snapshot, start_run

if TYPE_CHECKING:  # the dashboard imports Panel: only the tests that use it load it
    from sentrycam.frontend.run_view import RunDashboard


@pytest.fixture
def dashboard(server, ingest) -> Iterator[RunDashboard]:
    """The dashboard of a run with steps 0-3 and maps of LAYER at steps 0 and 3."""
    from sentrycam.frontend.run_view import RunDashboard

    start_run(ingest, steps=4)
    for step in (0, 3):
        snapshot(ingest, step)
        project(server, step)
    client = ApiClient(server.url)
    view = RunDashboard(client, RUN)
    yield view
    view.close()
    client.close()


def drain_until(dashboard: RunDashboard, condition: Callable[[], bool],
                timeout: float = 20.0) -> None:
    """Apply the dashboard's pushed frames until ``condition()`` holds (fail after timeout)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the dashboard did not receive the data in time"
        dashboard.drain()
        time.sleep(0.05)
