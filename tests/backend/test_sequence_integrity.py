"""Sequence integrity on ingest, against a real in-process server over real websockets.

What a team relies on: the server stores a run's messages only in order (seq 0, 1, 2, ... per
run); a frame out of order, however large its seq, is refused with the seq the run needs and
poisons nothing; duplicates are acknowledged and not stored again; an ack never covers a
message that is not stored; a finished run takes its own late replay but nothing new. And the
real ``WebSocketTransport`` answers such a refusal by resending, so that a frame lost on the
way, or one the server can never take, costs nothing else.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Iterator

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import serve

from sentrycam.backend.testing import serve_in_thread
from sentrycam.capture.sender import WebSocketTransport
from sentrycam.capture.sequence import LOST_EVENT
from sentrycam.protocol import wire
from sentrycam.protocol.messages import RunEnd, RunStart, Scalars, Snapshot
from sentrycam.protocol.wire import ack_reply
from tests.server_process import free_port

RUN = "seq-run"
WAIT_S = 15.0
POISON = 2**63 - 1  # the largest seq a frame may carry


def _scalars(step: int, run_id: str = RUN) -> Scalars:
    return Scalars(run_id, step, 1000.0 + step, {"loss": 1.0 / (step + 1)})


class Connection:
    """Sends frames with the seqs a test chooses and reads the server's replies."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.replies: list[dict] = []

    def send(self, message, seq: int) -> None:
        self.ws.send(wire.encode(message, seq, time.time()))

    def answer(self, run_id: str, seq: int) -> dict:
        """The first reply that settles frame ``seq`` of ``run_id``: an ack covering it, or an
        error naming it."""
        deadline = time.monotonic() + WAIT_S
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.replies.append(reply)
            if reply["type"] == "ack" and reply["run_id"] == run_id and reply["seq"] >= seq:
                return reply
            if reply["type"] == "error" and (reply["run_id"], reply["seq"]) == (run_id, seq):
                return reply

    def acked(self, run_id: str) -> int:
        return max(r["seq"] for r in self.replies if r["type"] == "ack" and r["run_id"] == run_id)


@contextlib.contextmanager
def _connection(server) -> Iterator[Connection]:
    with connect(server.ws_url) as ws:
        yield Connection(ws)


def _loss_steps(store, run_id: str = RUN) -> list[int]:
    return store.scalars(run_id, names=["loss"])["step"]


def test_a_frame_with_the_largest_seq_is_refused_and_the_run_goes_on(server):
    with _connection(server) as conn:
        conn.send(RunStart(RUN, "poisoned", 1.0), 0)
        conn.send(_scalars(0), 1)
        assert conn.answer(RUN, 1) == ack_reply(RUN, 1)
        conn.send(_scalars(999), POISON)
        refused = conn.answer(RUN, POISON)
        assert refused["type"] == "error" and refused["expected_seq"] == 2
        assert "needs seq 2 next" in refused["error"]
        for seq in range(2, 6):
            conn.send(_scalars(seq - 1), seq)
        assert conn.answer(RUN, 5) == ack_reply(RUN, 5)
        assert conn.acked(RUN) == 5  # nothing past what is stored was ever acknowledged
    assert _loss_steps(server.store) == [0, 1, 2, 3, 4]
    assert server.store.run_summaries(RUN)[0]["last_step"] == 4


def test_a_new_run_whose_first_frame_is_out_of_order_leaves_no_trace(server):
    with _connection(server) as conn:
        conn.send(_scalars(0, run_id="ghost"), POISON)
        refused = conn.answer("ghost", POISON)
        assert refused["type"] == "error" and refused["expected_seq"] == 0
        conn.send(RunStart(RUN, "real", 1.0), 0)
        conn.answer(RUN, 0)
    assert [run["run_id"] for run in server.store.run_summaries()] == [RUN]


def test_a_message_out_of_order_waits_for_the_one_before_it(server):
    with _connection(server) as conn:
        conn.send(RunStart(RUN, "shuffled", 1.0), 0)
        conn.send(_scalars(1), 2)  # overtook seq 1
        refused = conn.answer(RUN, 2)
        assert refused["type"] == "error" and refused["expected_seq"] == 1
        assert conn.acked(RUN) == 0
        conn.send(_scalars(0), 1)
        assert conn.answer(RUN, 1) == ack_reply(RUN, 1)
        conn.send(_scalars(1), 2)  # resent, as the transport does
        assert conn.answer(RUN, 2) == ack_reply(RUN, 2)
    assert _loss_steps(server.store) == [0, 1]


def test_a_finished_run_takes_its_own_late_replay_but_nothing_new(server):
    messages = [RunStart(RUN, "ended", 1.0), _scalars(0), _scalars(1), RunEnd(RUN, 1, "finished")]
    with _connection(server) as conn:
        for seq, message in enumerate(messages):
            conn.send(message, seq)
        assert conn.answer(RUN, 3) == ack_reply(RUN, 3)
    with _connection(server) as late:  # a trainer that never saw the acks replays them
        for seq, message in enumerate(messages):
            late.send(message, seq)
        assert late.answer(RUN, 3) == ack_reply(RUN, 3)
        assert [r for r in late.replies if r["type"] == "error"] == []
        late.send(_scalars(50), 4)
        refused = late.answer(RUN, 4)
        assert refused["type"] == "error" and "expected_seq" not in refused
        assert f"run {RUN} is finished" in refused["error"]
        late.send(RunStart(RUN, "reopened?", 2.0), 4)
        assert late.answer(RUN, 4)["type"] == "error"
    [summary] = server.store.run_summaries(RUN)
    assert (summary["status"], summary["last_step"], summary["name"]) == ("finished", 1, "ended")
    assert _loss_steps(server.store) == [0, 1]


class FrameDroppingProxy:
    """Relays websocket frames between a trainer and the server, losing the ``drop``-th binary
    frame from the trainer once (as a connection that breaks mid-write could)."""

    def __init__(self, target_ws_url: str, drop: int) -> None:
        self.target, self.drop, self.forwarded = target_ws_url, drop, 0
        self.port = free_port()
        self._server = serve(self._relay, "127.0.0.1", self.port, max_size=None)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(10)

    def _relay(self, trainer) -> None:
        with connect(self.target, max_size=None) as upstream:
            back = threading.Thread(target=self._pump, args=(upstream, trainer), daemon=True)
            back.start()
            with contextlib.suppress(ConnectionClosed):
                for frame in trainer:
                    if isinstance(frame, bytes):
                        self.forwarded += 1
                        if self.forwarded == self.drop:
                            continue
                    upstream.send(frame)

    @staticmethod
    def _pump(source, sink) -> None:
        with contextlib.suppress(ConnectionClosed):
            for message in source:
                sink.send(message)


@pytest.fixture
def proxy(server):
    made = []

    def make(drop: int) -> FrameDroppingProxy:
        made.append(FrameDroppingProxy(server.ws_url, drop))
        return made[-1]

    yield make
    for relay in made:
        relay.close()


def _train(transport: WebSocketTransport, steps: int, extra=()) -> None:
    assert transport.send(RunStart(RUN, "resent", 1.0))
    for step in range(steps):
        assert transport.send(_scalars(step))
        for message in extra:
            if message.step == step:
                assert transport.send(message)
    assert transport.send(RunEnd(RUN, steps - 1, "finished"))


def test_a_frame_lost_on_the_way_is_resent_and_everything_is_stored_once(server, proxy,
                                                                         tmp_path):
    relay = proxy(drop=5)  # the frame of step 3
    transport = WebSocketTransport(relay.url, RUN, tmp_path / "spool")
    _train(transport, 30)
    assert transport.wait_acked(timeout=30)
    counters = transport.counters()
    transport.close()
    assert _loss_steps(server.store) == list(range(30))  # each once, in order
    assert server.store.events(RUN) == []  # resent for real: nothing stood in for it
    assert server.store.run_summaries(RUN)[0]["status"] == "finished"
    assert counters.acked == 32 and counters.errors == 0 and counters.sent > 32


def test_a_frame_the_server_can_never_take_leaves_a_lost_event_and_costs_nothing_else(
        make_settings, store, tmp_path):
    big = Snapshot(RUN, 4, 0, np.arange(1000, dtype=np.int64), {},
                   {"fc": np.zeros((1000, 64), np.float16)})  # 128 KiB: over the limit
    with serve_in_thread(make_settings(max_frame_bytes=64 * 1024), store) as server:
        transport = WebSocketTransport(server.url, RUN, tmp_path / "spool")
        _train(transport, 10, extra=[big])
        assert transport.wait_acked(timeout=30)
        counters = transport.counters()
        transport.close()
        assert _loss_steps(store) == list(range(10))
        [lost] = store.events(RUN)
        assert (lost["event"], lost["step"]) == (LOST_EVENT, 5)  # the step after the snapshot
        assert store.run_summaries(RUN)[0]["status"] == "finished"
        assert store.snapshot_index(RUN) == []
        assert counters.dropped == 1 and counters.acked == 12
