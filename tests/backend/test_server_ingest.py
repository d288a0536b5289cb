"""Websocket ingest against a real server: storage, acks, duplicates, bad frames, disconnects."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import time
from typing import Iterator

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sentrycam.backend.testing import serve_in_thread
from sentrycam.protocol import wire
from sentrycam.protocol.messages import (SCHEMA_VERSION, Event, LayerStats, ProbeSet, RunEnd,
                                        RunStart, Scalars, Snapshot, Status)

RUN = "9f1c2e7a0b"
N, D = 8, 5
WAIT_S = 15.0


def _run_messages(run_id: str = RUN) -> list:
    """One run with a message of every kind, in the order a trainer sends them."""
    rng = np.random.default_rng(0)
    ids = np.arange(N, dtype=np.int64)
    return [
        RunStart(run_id, "mlp-digits", 1700000000.0, {"probe": N}),
        ProbeSet(run_id, ids, rng.integers(0, 3, N).astype(np.int64), np.zeros(N, np.uint8)),
        Scalars(run_id, 0, 1700000001.0, {"loss": 2.3, "lr": 0.1}),
        LayerStats(run_id, 0, ("fc1", "fc2"), ("grad_norm", "act_std"),
                   np.array([[1.5, np.nan], [0.25, 0.5]], np.float32)),
        Snapshot(run_id, 1, 0, ids,
                 {"pred": rng.integers(0, 3, N).astype(np.int64),
                  "confidence": rng.random(N).astype(np.float32)},
                 {"fc2:input": rng.standard_normal((N, D)).astype(np.float16)}),
        Event(run_id, 1, 1700000002.0, "note", "halfway", {"k": 1}),
        Status(run_id, 1, dropped=3, spooled=0, overhead=0.006, snapshot_every=25, queue_depth=0),
        Scalars(run_id, 1, 1700000003.0, {"loss": math.nan}),
        RunEnd(run_id, 2, "finished"),
    ]


class Client:
    """Sends sentrycam frames over an open websocket and reads the server's replies."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.replies: list[dict] = []

    def send(self, message, seq: int) -> None:
        self.ws.send(wire.encode(message, seq, time.time()))

    def send_all(self, messages, first_seq: int = 0) -> int:
        for seq, message in enumerate(messages, first_seq):
            self.send(message, seq)
        return first_seq + len(messages) - 1

    def wait_ack(self, run_id: str, seq: int) -> list[dict]:
        """Read replies until ``run_id`` is acked up to ``seq``; returns the replies read."""
        deadline = time.monotonic() + WAIT_S
        start = len(self.replies)
        while not any(r["type"] == "ack" and r["run_id"] == run_id and r["seq"] >= seq
                      for r in self.replies[start:]):
            self.replies.append(json.loads(self.ws.recv(timeout=deadline - time.monotonic())))
        return self.replies[start:]

    def errors(self) -> list[dict]:
        return [r for r in self.replies if r["type"] == "error"]


@contextlib.contextmanager
def open_client(url: str) -> Iterator[Client]:
    with connect(url) as ws:
        yield Client(ws)


@pytest.fixture
def client(server):
    with open_client(server.ws_url) as opened:
        yield opened


def test_a_run_with_every_kind_of_message_is_stored_and_acked(server, client):
    messages = _run_messages()
    last = client.send_all(messages)
    client.wait_ack(RUN, last)
    assert client.errors() == []
    store = server.store
    [summary] = store.run_summaries(RUN)
    assert (summary["name"], summary["status"], summary["last_step"]) == ("mlp-digits", "finished", 2)
    assert (summary["n_probe"], summary["n_snapshots"], summary["dropped"]) == (N, 1, 3)
    scalars = store.scalars(RUN, names=["loss"])
    assert scalars["step"] == [0, 1]
    assert scalars["value"][0] == pytest.approx(2.3) and math.isnan(scalars["value"][1])
    stats = store.layer_stats(RUN)
    got = dict(zip(zip(stats["layer"], stats["stat"]), stats["value"]))
    assert got[("fc1", "grad_norm")] == pytest.approx(1.5) and math.isnan(got[("fc1", "act_std")])
    ids, feats = store.features(RUN, 1, "fc2:input")
    assert np.array_equal(ids, messages[1].sample_ids)
    assert np.array_equal(feats, messages[4].features["fc2:input"])
    assert [e["message"] for e in store.events(RUN)] == ["halfway"]


def test_resent_messages_are_acked_but_stored_once(server, client):
    messages = _run_messages()[:4]
    last = client.send_all(messages)
    client.wait_ack(RUN, last)
    before = server.store.run_summaries(RUN)[0]["n_scalar_rows"]
    # A trainer that reconnects replays what it had not seen acked: the same seqs again.
    client.send_all(messages[2:], first_seq=2)
    replies = client.wait_ack(RUN, last)
    assert [r for r in replies if r["type"] == "error"] == []
    assert server.store.run_summaries(RUN)[0]["n_scalar_rows"] == before
    assert server.store.scalars(RUN)["step"] == [0, 0]


def _frame_with_header(message, seq: int, **header_changes) -> bytes:
    frame = wire.encode(message, seq, 1.0)
    head_len = int.from_bytes(frame[5:9], "little")
    header = {**json.loads(frame[9:9 + head_len]), **header_changes}
    head = json.dumps(header).encode()
    return frame[:5] + len(head).to_bytes(4, "little") + head + frame[9 + head_len:]


def _bad_frames(run_id: str) -> dict[str, tuple[bytes | str, str]]:
    """Name -> (what to send, text the error frame must contain)."""
    ids = np.arange(N, dtype=np.int64)
    scalars = Scalars(run_id, 5, 1.0, {"loss": 1.0})
    mismatched = Snapshot(run_id, 5, 0, ids, {"pred": np.zeros(N, np.int64)},
                          {"fc2:input": np.zeros((N - 2, D), np.float16)})
    return {
        "garbage": (b"\x89PNG not a frame at all", "bad magic"),
        "bad magic": (b"XXXX" + wire.encode(scalars, 10, 1.0)[4:], "bad magic"),
        "schema version": (_frame_with_header(scalars, 11, v=SCHEMA_VERSION + 5),
                           "schema version"),
        "truncated": (wire.encode(mismatched, 12, 1.0)[:-7], "frame ends first"),
        "mismatched shapes": (wire.encode(mismatched, 13, 1.0), "features/fc2:input"),
        "unknown kind": (_frame_with_header(scalars, 14, kind="gossip"), "unknown message kind"),
        "text frame": ("hello", "text frames are not accepted"),
    }


def test_bad_frames_get_error_frames_and_the_connection_and_store_carry_on(server, client):
    good = _run_messages()[:3]
    client.send_all(good)
    bad = _bad_frames(RUN)
    for payload, _ in bad.values():
        client.ws.send(payload)
    client.send(Scalars(RUN, 1, 2.0, {"loss": 1.0}), 3)
    client.send(Scalars(RUN, 2, 3.0, {"loss": 0.5}), 4)
    client.wait_ack(RUN, 4)
    errors = client.errors()
    assert len(errors) == len(bad)
    for (name, (_, expected)), error in zip(bad.items(), errors):
        assert expected in error["error"], name
    # Where the header could be read, the error names the refused frame.
    assert [e["seq"] for e in errors] == [None, None, 11, None, 13, 14, None]
    assert server.store.scalars(RUN, names=["loss"])["step"] == [0, 1, 2]
    assert server.store.run_summaries(RUN)[0]["n_probe"] == N
    assert server.app.state.writer.stats()["rejected"] == len(bad)


def test_one_connection_carries_several_runs(server, client):
    other = "second_run-1"
    for seq, (a, b) in enumerate(zip(_run_messages(RUN)[:3], _run_messages(other)[:3])):
        client.send(a, seq)
        client.send(b, seq)
    client.wait_ack(RUN, 2)
    client.wait_ack(other, 2)
    assert {r["run_id"] for r in server.store.run_summaries()} == {RUN, other}


def test_backpressure_from_a_tiny_queue_loses_nothing(make_settings, store):
    settings = make_settings(ingest_queue=2, batch_max=3)
    with serve_in_thread(settings, store) as server:
        with open_client(server.ws_url) as client:
            client.send(RunStart(RUN, "many", 1.0), 0)
            for step in range(300):
                client.send(Scalars(RUN, step, 1.0, {"loss": 1.0 / (step + 1)}), step + 1)
            client.wait_ack(RUN, 300)
        assert store.scalars(RUN)["step"] == list(range(300))
        assert server.app.state.writer.stats()["queue_full"] > 0  # the slow path really ran


def test_a_client_vanishing_mid_stream_leaves_the_server_working(server):
    with open_client(server.ws_url) as doomed:
        doomed.send(RunStart(RUN, "doomed", 1.0), 0)
        for step in range(200):
            doomed.send(Scalars(RUN, step, 1.0, {"loss": 1.0}), step + 1)
        doomed.ws.socket.shutdown(socket.SHUT_RDWR)  # no close handshake: the process died

    with open_client(server.ws_url) as survivor:
        survivor.send(RunStart("other", "survivor", 1.0), 0)
        survivor.send(Scalars("other", 0, 1.0, {"loss": 1.0}), 1)
        survivor.wait_ack("other", 1)
    server.wait_written()
    # What reached the server before the drop is stored as a gap-free prefix.
    steps = server.store.scalars(RUN)["step"]
    assert steps == list(range(len(steps)))
    assert server.app.state.writer.stats()["running"]


def test_a_frame_over_the_size_limit_closes_only_that_connection(make_settings, store):
    with serve_in_thread(make_settings(max_frame_bytes=64 * 1024), store) as server:
        with open_client(server.ws_url) as big:
            big.send(RunStart(RUN, "big", 1.0), 0)
            big.wait_ack(RUN, 0)
            ids = np.arange(1000, dtype=np.int64)
            huge = Snapshot(RUN, 0, 0, ids, {}, {"fc": np.zeros((1000, 64), np.float16)})
            big.send(huge, 1)
            with pytest.raises(ConnectionClosed) as closed:
                big.wait_ack(RUN, 1)
            assert closed.value.rcvd.code == 1009
            assert closed.value.rcvd.reason == "frame exceeds limit of 65536 bytes"
        with open_client(server.ws_url) as fine:  # the run needs seq 1 next: the huge one
            fine.send(Scalars(RUN, 0, 1.0, {"loss": 1.0}), 1)  # never reached the store
            fine.wait_ack(RUN, 1)
        assert store.run_summaries(RUN)[0]["n_snapshots"] == 0


def test_a_realistic_snapshot_of_2000_by_512_is_stored(server, client):
    rng = np.random.default_rng(3)
    ids = np.arange(2000, dtype=np.int64)
    feats = rng.standard_normal((2000, 512)).astype(np.float16)
    client.send(RunStart(RUN, "wide", 1.0), 0)
    client.send(Snapshot(RUN, 0, 0, ids, {"pred": np.zeros(2000, np.int64)}, {"fc:input": feats}), 1)
    client.wait_ack(RUN, 1)
    stored_ids, stored = server.store.features(RUN, 0, "fc:input")
    assert np.array_equal(stored_ids, ids) and np.array_equal(stored, feats)
