"""Helpers for end-to-end tests: real `sentrycam serve` processes on loopback, small trainings."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from sentrycam.capture import demo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return json.load(response)["status"] == "ok"
    except OSError:
        return False


@dataclass
class ServerProcess:
    """A `python -m sentrycam serve` child process on a fixed port."""

    db: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        log = open(self.db.with_suffix(".log"), "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sentrycam", "serve", "--db", str(self.db), "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not healthy(self.url):
            assert self.process.poll() is None, self.db.with_suffix(".log").read_text()[-2000:]
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, whatever was in flight is lost by the server."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


@pytest.fixture
def server_process(tmp_path):
    """A factory of real server processes, all stopped at the end of the test."""
    started: list[ServerProcess] = []

    def make(db: Path | None = None, port: int | None = None) -> ServerProcess:
        server = ServerProcess(db or tmp_path / "e2e.duckdb", port or free_port())
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@dataclass
class Trainer:
    """A seeded MLP on digits that trains step by step, so tests can act between steps."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    data: demo.DigitsData
    batches: object
    steps_done: int = 0

    def train(self, steps: int) -> None:
        for _, (xb, yb, _epoch) in zip(range(steps), self.batches):
            self.optimizer.zero_grad(set_to_none=True)
            self.criterion(self.model(xb), yb).backward()
            self.optimizer.step()
            self.steps_done += 1


@pytest.fixture
def trainer() -> Trainer:
    data = demo.load_digits_data(seed=0)
    model = demo.build_model("mlp", seed=0)
    return Trainer(model, torch.optim.Adam(model.parameters(), lr=2e-3), nn.CrossEntropyLoss(),
                   data, demo.batches(data.x_train, data.y_train, 64, seed=0))


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run the test from tmp_path, so ./sentrycam-runs lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SENTRYCAM_URL", raising=False)
    return tmp_path
