"""WebSocketTransport against the real ``python -m sentrycam serve`` process.

What a user relies on: a server killed (SIGKILL) and restarted on the same port and file in the
middle of training loses nothing and stores nothing twice; a server that never came up costs
the trainer nothing, and ``replay_spool`` later stores the whole spool exactly once.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import urllib.request

import pytest

from sentrycam.protocol import wire
from sentrycam.protocol.messages import RunEnd, RunStart, Scalars
from sentrycam.capture.sender import WebSocketTransport, replay_spool
from sentrycam.capture.spool import Spool

pytestmark = pytest.mark.slow  # starts server processes
RUN = "feedface" * 4


def _wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _loss_steps(url: str) -> collections.Counter:
    columns = _get_json(f"{url}/api/runs/{RUN}/scalars?names=loss")
    return collections.Counter(columns["step"])


def _scalars(step: int) -> Scalars:
    return Scalars(RUN, step, 1000.0 + step, {"loss": 1.0 / (step + 1)})


def test_a_server_killed_and_restarted_mid_run_stores_every_message_exactly_once(
        server_process, tmp_path):
    server = server_process(db=tmp_path / "runs.duckdb").start()
    url = server.url
    transport = WebSocketTransport(url, RUN, tmp_path / "spool")
    total = 600

    def train() -> None:
        transport.send(RunStart(RUN, "kill-test", time.time()))
        for step in range(total):
            transport.send(_scalars(step))
            time.sleep(0.002)  # a training step
        transport.send(RunEnd(RUN, total - 1, "finished"))

    trainer = threading.Thread(target=train)
    trainer.start()
    try:
        assert _wait_for(lambda: transport.counters().acked >= 150)
        server.kill()
        assert _wait_for(lambda: transport.counters().spooled > 0)  # the outage was noticed
        server_process(db=server.db, port=server.port).start()
    finally:
        trainer.join(60)
    assert transport.wait_acked(timeout=60)  # flush alone may be satisfied by the spool
    counters = transport.counters()
    transport.close()
    steps = _loss_steps(url)
    assert sorted(steps) == list(range(total))
    assert set(steps.values()) == {1}
    assert counters.dropped == 0 and counters.acked == total + 2
    assert not (tmp_path / "spool" / RUN).exists()


def test_a_server_that_never_started_costs_nothing_and_replay_stores_everything_once(
        server_process, tmp_path):
    server = server_process(db=tmp_path / "runs.duckdb")  # not started yet
    url = server.url
    spool_dir = tmp_path / "spool"
    transport = WebSocketTransport(url, RUN, spool_dir)
    messages = [RunStart(RUN, "offline", 1.0)] + [_scalars(step) for step in range(2000)]
    slowest = 0.0
    for message in messages:
        began = time.perf_counter()
        assert transport.send(message)
        slowest = max(slowest, time.perf_counter() - began)
    # A send that waited on the network would take the 5 s open timeout; 2 s leaves room for
    # scheduler pauses on a loaded 2-core CI machine (0.75 s seen) without hiding that.
    assert slowest < 2.0
    began = time.monotonic()
    transport.close(timeout=3)
    assert time.monotonic() - began < 3 + 1.0
    records = list(Spool(spool_dir / RUN).records())
    assert [wire.decode(frame)[1] for _, frame in records] == messages
    assert transport.counters().spooled == len(messages)

    server.start()
    assert replay_spool(spool_dir, url, timeout=60) == len(messages)
    assert not (spool_dir / RUN).exists()
    assert replay_spool(spool_dir, url, timeout=60) == 0
    steps = _loss_steps(url)
    assert sorted(steps) == list(range(2000)) and set(steps.values()) == {1}
