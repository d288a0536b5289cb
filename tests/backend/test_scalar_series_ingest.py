"""A ScalarSeries through a real server: every step's values stored exactly, dashboards told
the same scalars as one Scalars per step would tell them, a bad series refused with an error
frame naming the problem (the connection carries on), and an older trainer's version-3
Scalars frame still stored."""

from __future__ import annotations

import json
import math
import time

import numpy as np
from websockets.sync.client import connect

from sentrycam.protocol import wire
from sentrycam.protocol.messages import RunStart, Scalars, ScalarSeries
from tests.live_server import Subscriber

SERIES_RUN, PER_STEP_RUN = "series0run", "perstep0run"
STEPS = np.arange(10, 74, dtype=np.int64)  # a batch of 64 quiet steps


def _series(run_id: str = SERIES_RUN) -> ScalarSeries:
    loss = 2.0 / (1.0 + 0.1 * STEPS)
    loss[5] = math.nan  # a NaN loss is a value, stored as such
    rates = np.full(len(STEPS), 1e-3)
    return ScalarSeries(run_id, ("lr", "loss"), STEPS, 1700000000.0 + 0.01 * STEPS,
                        np.column_stack([rates, loss]))


def _pushed_scalars(subscriber: Subscriber) -> list[tuple[int, str, float]]:
    header, arrays = subscriber.until_type("scalars")
    names = header.names
    return sorted((int(s), names[int(c)], float(v)) for s, c, v in
                  zip(arrays["step"], arrays["name"], arrays["value"]))


def test_a_series_is_stored_exactly_and_pushed_as_per_step_scalars_are(server, ingest):
    series = _series()
    ingest.send(RunStart(SERIES_RUN, "series", 1.0), RunStart(PER_STEP_RUN, "per step", 1.0))
    by_series, by_step = Subscriber(server, SERIES_RUN), Subscriber(server, PER_STEP_RUN)
    try:
        by_series.until_type("caught_up")
        by_step.until_type("caught_up")
        ingest.send(series)
        ingest.send(*_series(PER_STEP_RUN).scalars())
        pushed = _pushed_scalars(by_series)
        assert len(pushed) == 2 * len(STEPS)
        assert repr(pushed) == repr(_pushed_scalars(by_step))  # repr: NaN equals NaN
    finally:
        by_series.close()
        by_step.close()
    stored = server.store.scalars(SERIES_RUN)
    rows = list(zip(stored["step"], stored["name"], stored["value"], stored["wall_time"]))
    expected = [(s.step, name, s.values[name], s.wall_time)
                for s in series.scalars() for name in sorted(s.values)]
    assert repr(rows) == repr(expected)
    assert server.store.run_summaries(SERIES_RUN)[0]["last_step"] == int(STEPS[-1])


def _frame_with_header(frame: bytes, **changes) -> bytes:
    head_len = int.from_bytes(frame[5:9], "little")
    header = {**json.loads(frame[9:9 + head_len]), **changes}
    head = json.dumps(header).encode()
    return frame[:5] + len(head).to_bytes(4, "little") + head + frame[9 + head_len:]


def _replies_until_ack(ws, seq: int) -> list[dict]:
    """The server's replies up to its ack of ``seq`` (acks may cover several frames)."""
    replies = [json.loads(ws.recv(timeout=15))]
    while not (replies[-1]["type"] == "ack" and replies[-1]["seq"] >= seq):
        replies.append(json.loads(ws.recv(timeout=15)))
    return replies


def test_a_bad_series_gets_an_error_frame_and_the_run_carries_on(server):
    good = _series()
    bad = ScalarSeries(SERIES_RUN, good.names, good.steps[::-1].copy(), good.wall_times,
                       good.values)
    with connect(server.ws_url) as ws:
        ws.send(wire.encode(RunStart(SERIES_RUN, "series", 1.0), 0, time.time()))
        ws.send(wire.encode(bad, 1, time.time()))
        ws.send(wire.encode(good, 1, time.time()))
        replies = _replies_until_ack(ws, 1)
    errors = [r for r in replies if r["type"] == "error"]
    assert len(errors) == 1 and errors[0]["seq"] == 1
    assert "invalid scalar_series frame: steps must increase strictly" in errors[0]["error"]
    assert server.store.scalars(SERIES_RUN, names=["loss"])["step"] == STEPS.tolist()


def test_a_version_3_scalars_frame_is_still_stored(server):
    old = Scalars(SERIES_RUN, 0, 1.0, {"loss": 0.75, "lr": 0.1})
    with connect(server.ws_url) as ws:
        ws.send(wire.encode(RunStart(SERIES_RUN, "old trainer", 1.0), 0, time.time()))
        ws.send(_frame_with_header(wire.encode(old, 1, time.time()), v=3))
        replies = _replies_until_ack(ws, 1)
    assert [r for r in replies if r["type"] != "ack"] == []
    stored = server.store.scalars(SERIES_RUN)
    assert list(zip(stored["name"], stored["value"])) == [("loss", 0.75), ("lr", 0.1)]
