"""Fixtures of the dashboard tests: a real server (``server``, ``ingest`` from
:mod:`tests.live_server`) with a run whose maps are written as the projector worker writes
them, and the dashboard of that run (``dashboard``)."""

from __future__ import annotations

from typing import Iterator

import pytest

from sentrycam.backend.testing import isolate_environment
from sentrycam.frontend.client import ApiClient
from sentrycam.frontend.run_view import RunDashboard
from tests.live_server import RUN, project, snapshot, start_run


@pytest.fixture(autouse=True)
def _no_sentrycam_environment(monkeypatch):
    isolate_environment(monkeypatch)


@pytest.fixture
def dashboard(server, ingest) -> Iterator[RunDashboard]:
    """The dashboard of a run with steps 0-3 and maps of LAYER at steps 0 and 3."""
    start_run(ingest, steps=4)
    for step in (0, 3):
        snapshot(ingest, step)
        project(server, step)
    client = ApiClient(server.url)
    view = RunDashboard(client, RUN)
    yield view
    view.close()
    client.close()
