"""A real server on loopback and what its API says of a run, for the framework callback tests:
``live`` draws 2D maps with the StandInProjector, ``projecting_live`` with the real projector
worker (its numba warm-up costs 30-60 s of CPU: tests using it are marked ``projector``)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import defaultdict
from typing import Any, Iterator

import pytest

from sentrycam.backend.testing import StandInProjector, serve_in_thread

MAPS_TIMEOUT_S = 30.0
#: The real projector's first map waits for its JIT warm-up (minutes on a loaded machine).
PROJECTOR_TIMEOUT_S = 600.0


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=20) as response:
        return json.loads(response.read())


class Stored:
    """What the server's API holds for the run named ``name``: ``summary``, ``scalars``
    {name: {step: value}}, ``snapshot_steps`` and ``maps`` ([{step, layer, n}])."""

    def __init__(self, url: str, name: str, timeout: float = MAPS_TIMEOUT_S) -> None:
        run_id = next(run["run_id"] for run in get(f"{url}/api/runs") if run["name"] == name)
        base = f"{url}/api/runs/{run_id}"
        self.summary = get(base)
        columns = get(f"{base}/scalars")
        self.scalars: dict[str, dict[int, float]] = defaultdict(dict)
        for step, name, value in zip(columns["step"], columns["name"], columns["value"]):
            self.scalars[name][step] = value
        self.snapshot_steps = sorted({row["step"] for row in get(f"{base}/snapshots")})
        deadline = time.monotonic() + timeout
        self.maps = get(f"{base}/embeddings")
        while len({m["step"] for m in self.maps}) < len(self.snapshot_steps) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
            self.maps = get(f"{base}/embeddings")


class LiveServer:
    """A real server (a DuckDB file in tmp_path) that draws 2D maps of each snapshot."""

    def __init__(self, url: str, maps_timeout: float = MAPS_TIMEOUT_S) -> None:
        self.url, self.maps_timeout = url, maps_timeout

    def stored(self, name: str) -> Stored:
        return Stored(self.url, name, self.maps_timeout)

    def projector(self) -> Any:
        """What ``/api/projector`` says of the projector worker (state, maps projected)."""
        return get(f"{self.url}/api/projector")


@pytest.fixture
def live(make_settings, monkeypatch, tmp_path) -> Iterator[LiveServer]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # a run streaming to url= keeps its spool under ./sentrycam-runs
    with serve_in_thread(make_settings()) as running, StandInProjector(running.app):
        yield LiveServer(running.url)


@pytest.fixture
def projecting_live(make_settings, monkeypatch, tmp_path) -> Iterator[LiveServer]:
    monkeypatch.chdir(tmp_path)
    settings = make_settings(projector=True, projector_device="cpu")
    with serve_in_thread(settings) as running:
        yield LiveServer(running.url, PROJECTOR_TIMEOUT_S)
