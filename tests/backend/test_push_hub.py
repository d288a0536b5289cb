"""The push hub over a real server: catch-up, live frames, slow and vanishing subscribers."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

from sentrycam.backend.feed import Change
from sentrycam.backend.hub import PushHub, Subscriber as HubSubscriber
from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.push import decode
from tests.live_server import (LAYER, N_PROBE, RUN, WRONG_PREDICTIONS, Subscriber, labels,
                               project, quality, snapshot, start_run, train_step)


def _rows(header, arrays, name):
    """{step: value} of one scalar in a scalars frame."""
    code = header.names.index(name)
    keep = arrays["name"] == code
    return dict(zip(arrays["step"][keep].tolist(), arrays["value"][keep].tolist()))


def test_late_subscriber_catches_up_on_the_whole_run(server, ingest):
    start_run(ingest, steps=5)
    for step in (0, 4):
        snapshot(ingest, step)
        project(server, step)
    subscriber = Subscriber(server)
    subscriber.until_type("caught_up")
    frames = {h.type: (h, a) for h, a in subscriber.frames}
    assert {"run", "probe", "scalars", "layer_stats", "snapshots", "embedding_index", "health",
            "embedding", "quality", "alerts"} <= set(frames)
    assert _rows(*frames["scalars"], "loss") == {s: 1.0 / (s + 1) for s in range(5)}
    assert frames["snapshots"][0].steps == [0, 4]
    assert frames["embedding_index"][0].entries == [(0, LAYER, N_PROBE), (4, LAYER, N_PROBE)]
    header, arrays = frames["embedding"]
    assert header.step == 4 and arrays["xy"].shape == (N_PROBE, 2)
    assert (arrays["pred"] != labels()).sum() == WRONG_PREDICTIONS
    assert frames["health"][1]["step"].tolist() == [0, 4]
    assert frames["run"][0].summary["run_id"] == RUN
    assert frames["alerts"][0].alerts == []
    subscriber.close()


def test_live_frames_follow_what_the_store_receives(server, ingest):
    start_run(ingest, steps=1)
    subscriber = Subscriber(server)
    subscriber.until_type("caught_up")
    train_step(ingest, 7)
    header, arrays = subscriber.until(lambda h, a: h.type == "scalars" and 7 in a["step"])
    assert _rows(header, arrays, "loss") == {7: 1.0 / 8}
    header, arrays = subscriber.until_type("layer_stats")
    assert set(header.layers) == {"conv", "fc"} and 7 in arrays["step"]
    snapshot(ingest, 7)
    assert subscriber.until_type("snapshots")[0].steps == [7]
    status = subscriber.until_type("status")[0]
    assert status.dropped == 2 and status.overhead == pytest.approx(0.004)
    xy = project(server, 7)
    header, arrays = subscriber.until_type("embedding")
    assert header.step == 7 and np.allclose(arrays["xy"], xy)
    assert header.health.inter > 10 > header.health.intra
    rows = subscriber.until_type("quality")[0].rows
    assert {(step, layer, name): value for step, layer, name, value in rows} == pytest.approx(
        {(7, LAYER, name): value for name, value in quality(7).items()})
    alert_id = server.store.upsert_alert(RUN, {"step": 7, "detector": "loss_divergence",
                                               "severity": 2, "message": "loss rising"})
    server.app.state.feed.publish([Change(RUN, ChangeKind.ALERT)])
    alerts = subscriber.until_type("alerts")[0].alerts
    assert [a["alert_id"] for a in alerts] == [alert_id]
    subscriber.close()


def test_unknown_run_is_refused_with_a_reason(server):
    subscriber = Subscriber(server, run_id="nope")
    with pytest.raises(ConnectionClosed) as closed:
        subscriber.socket.recv(timeout=10)
    assert closed.value.rcvd.code == 4404 and "nope" in closed.value.rcvd.reason


def test_clients_that_vanish_or_never_read_do_not_stop_ingest_or_the_others(server, ingest):
    start_run(ingest, steps=1)
    # Open, never read. Their receive queues fill up, so at the end they cannot read the
    # server's close reply either: close without waiting the default 10 s each for it.
    idle = [Subscriber(server, close_timeout=0.2) for _ in range(10)]
    vanishing = [Subscriber(server) for _ in range(3)]
    for subscriber in vanishing:
        subscriber.socket.close()
    reader = Subscriber(server)
    reader.until_type("caught_up")
    for step in range(1, 40):
        train_step(ingest, step)  # returns once the store committed it
    reader.until(lambda h, a: h.type == "scalars" and 39 in a["step"])
    assert len(server.store.scalars(RUN)["step"]) == 2 * 40
    stats = server.app.state.hub.stats()
    assert stats["subscribers"] == 11 and stats.get("build_errors", 0) == 0
    for subscriber in idle + [reader]:
        subscriber.close()


def test_a_slow_subscriber_loses_its_oldest_frames_and_is_told_how_many(store, server, ingest):
    start_run(ingest, steps=1)

    async def scenario():
        hub = PushHub(store, server.app.state.feed, max_frames=3)
        sent: list[bytes] = []
        gate = asyncio.Event()

        async def slow_send(frame: bytes) -> None:
            if decode(frame).header.type == "caught_up":
                gate.set()
            elif gate.is_set() and len(sent) > 11:
                await asyncio.sleep(0.5)  # a client that reads slowly
            sent.append(frame)

        hub.start()
        task = asyncio.create_task(hub.serve(RUN, slow_send))
        await gate.wait()
        for step in range(1, 30):
            await asyncio.to_thread(train_step, ingest, step)
        await asyncio.sleep(1.5)
        task.cancel()
        hub.stop()
        return [decode(f).header for f in sent]

    headers = asyncio.run(scenario())
    dropped = [h.count for h in headers if h.type == "dropped"]
    assert dropped and dropped[-1] > 0
    assert len(headers) < 11 + 2 * 29  # fewer frames arrived than were built


def test_subscriber_buffer_is_bounded_and_keeps_the_newest():
    async def scenario():
        subscriber = HubSubscriber(RUN, max_frames=3, max_bytes=1 << 20)
        for i in range(10):
            subscriber.push(bytes([i]))
        return subscriber.dropped, await subscriber.next_frames()

    dropped, frames = asyncio.run(scenario())
    assert dropped == 7 and frames == [bytes([7]), bytes([8]), bytes([9])]
