"""parse_frame: valid frames of every kind come back intact; bad ones are refused with a reason."""

from __future__ import annotations

import dataclasses
import json
import math
import struct

import numpy as np
import pytest

from sentrycam.protocol.validation import FrameRejected, parse_frame
from sentrycam.protocol import wire
from sentrycam.protocol.messages import (SCHEMA_VERSION, Event, LayerStats, ProbeSet, RunEnd,
                                        RunStart, Scalars, Snapshot, Status)

RUN = "0123abcd"
N, D = 6, 4


def _messages() -> list:
    rng = np.random.default_rng(0)
    ids = np.arange(10, 10 + N, dtype=np.int64)
    return [
        RunStart(RUN, "digits-cnn", 1700000000.0, {"layers": ["fc:input"], "probe": N}),
        ProbeSet(RUN, ids, rng.integers(0, 3, N).astype(np.int64), np.zeros(N, np.uint8)),
        Scalars(RUN, 3, 1700000001.0, {"loss": 0.5, "lr": 1e-3, "grad_norm": math.inf}),
        LayerStats(RUN, 3, ("conv1", "fc"), ("grad_norm", "act_std", "dead_frac"),
                   rng.random((2, 3)).astype(np.float32)),
        Snapshot(RUN, 4, 1, ids,
                 {"pred": rng.integers(0, 3, N).astype(np.int64),
                  "confidence": rng.random(N).astype(np.float32)},
                 {"fc:input": rng.standard_normal((N, D)).astype(np.float16),
                  "conv1": rng.standard_normal((N, 2)).astype(np.float16)},
                 {"fc:input": 0}),
        Event(RUN, 4, 1700000002.0, "lr_change", "lr halved", {"from": 1e-3, "to": 5e-4}),
        Status(RUN, 4, dropped=2, spooled=0, overhead=0.004, snapshot_every=50, queue_depth=1),
        RunEnd(RUN, 5, "finished"),
    ]


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


@pytest.mark.parametrize("message", _messages(), ids=lambda m: m.kind)
def test_valid_frames_of_every_kind_come_back_intact(message):
    seq, parsed = parse_frame(wire.encode(message, 41, 1700000003.0))
    assert seq == 41
    assert type(parsed) is type(message)
    for field in dataclasses.fields(message):
        assert _same(getattr(message, field.name), getattr(parsed, field.name)), field.name


def test_nan_and_inf_scalars_survive_as_floats():
    message = Scalars(RUN, 0, 1.0, {"loss": math.nan, "up": math.inf, "down": -math.inf})
    _, parsed = parse_frame(wire.encode(message, 0, 0.0))
    assert math.isnan(parsed.values["loss"])
    assert parsed.values["up"] == math.inf and parsed.values["down"] == -math.inf


# ---- frames rebuilt with a doctored header or payload -------------------------------------------

def _parts(message, seq: int = 7) -> tuple[dict, bytes]:
    frame = wire.encode(message, seq, 1.0)
    head_len = struct.unpack_from("<I", frame, 5)[0]
    return json.loads(frame[9:9 + head_len]), frame[9 + head_len:]


def _frame(header: dict, payload: bytes) -> bytes:
    head = json.dumps(header).encode()
    return b"SCAM" + struct.pack("<BI", 1, len(head)) + head + payload


def _doctored(message, change) -> bytes:
    """The frame of ``message`` after ``change(header)`` edited its JSON header in place."""
    header, payload = _parts(message)
    change(header)
    return _frame(header, payload)


def _sample(kind: str):
    return next(m for m in _messages() if m.kind == kind)


def _set(path: str, value):
    def change(header):
        *parents, last = path.split(".")
        target = header
        for key in parents:
            target = target[key]
        target[last] = value
    return change


def _snapshot_with(**changes) -> bytes:
    return wire.encode(dataclasses.replace(_sample("snapshot"), **changes), 7, 1.0)


def _probe_with(**changes) -> bytes:
    return wire.encode(dataclasses.replace(_sample("probe"), **changes), 7, 1.0)


BAD_FRAMES = {
    "a few bytes": (lambda: b"\x00\x01gar", "frame too short (5 bytes)"),
    "garbage": (lambda: np.random.default_rng(1).bytes(300), "bad magic"),
    "bad magic": (lambda: b"NOPE" + wire.encode(_sample("event"), 1, 1.0)[4:], "bad magic"),
    "schema version": (lambda: _doctored(_sample("scalars"), _set("v", SCHEMA_VERSION + 1)),
                       f"schema version {SCHEMA_VERSION + 1} is not supported"),
    "unknown kind": (lambda: _doctored(_sample("event"), _set("kind", "weather")),
                     "unknown message kind 'weather'"),
    "truncated arrays": (lambda: wire.encode(_sample("snapshot"), 7, 1.0)[:-10],
                         "frame ends first"),
    "features rows != sample_ids": (
        lambda: _snapshot_with(features={"fc:input": np.zeros((N + 1, D), np.float16)}),
        "features/fc:input has shape [7, 4]; features/fc:input must be a float16 array of "
        "shape [6, D>0]"),
    "output length != sample_ids": (
        lambda: _snapshot_with(outputs={"pred": np.zeros(N - 1, np.int64)}),
        "outputs/pred has shape [5]; outputs/pred must be an int64 array of shape [6]"),
    "features not float16": (
        lambda: _snapshot_with(features={"fc:input": np.zeros((N, D), np.float32)}),
        "features/fc:input has dtype float32; features/fc:input must be a float16 array"),
    "duplicate snapshot ids": (
        lambda: _snapshot_with(sample_ids=np.array([1, 2, 3, 3, 4, 5], np.int64)),
        "sample_ids must be unique; repeated: [3]"),
    "probe lengths differ": (lambda: _probe_with(labels=np.zeros(N + 2, np.int64)),
                             "labels has shape [8]; labels must be an int64 array of shape [6]"),
    "empty probe": (lambda: _probe_with(sample_ids=np.zeros(0, np.int64),
                                        labels=np.zeros(0, np.int64), split=np.zeros(0, np.uint8)),
                    "sample_ids has shape [0]; sample_ids must be an int64 array of shape [N>0]"),
    "no feature columns": (
        lambda: _snapshot_with(features={"fc:input": np.zeros((N, 0), np.float16)}),
        "features/fc:input has shape [6, 0]; features/fc:input must be a float16 array of "
        "shape [6, D>0]"),
    "nonfinite of an unknown layer": (
        lambda: _snapshot_with(nonfinite={"elsewhere": 1}),
        "nonfinite names ['elsewhere'], which features lacks"),
    "probe split values": (lambda: _probe_with(split=np.full(N, 7, np.uint8)),
                           "split values must be 0 (train) or 1 (held out)"),
    "layer stats shape": (
        lambda: wire.encode(dataclasses.replace(_sample("layer_stats"),
                                                values=np.zeros((2, 2), np.float32)), 7, 1.0),
        "values has shape [2, 2]; values must be a float32 array of shape [2, 3]"),
    "missing feature array": (
        lambda: _doctored(_sample("snapshot"), _set("body.features", ["fc:input", "conv1", "x"])),
        "missing arrays ['features/x']"),
    "array on an array-free kind": (
        lambda: _frame({**_parts(_sample("event"))[0],
                        "arrays": [{"name": "extra", "dtype": "<i8", "shape": [1]}]},
                       np.zeros(1, np.int64).tobytes()),
        "unexpected arrays ['extra']"),
    "bad run_id": (lambda: _doctored(_sample("scalars"), _set("run_id", "has space")),
                   "run_id 'has space': must be 1-64 characters"),
    "negative seq": (lambda: _doctored(_sample("scalars"), _set("seq", -1)),
                     "seq -1: Input should be greater than or equal to 0"),
    "negative step": (lambda: _doctored(_sample("scalars"), _set("body.step", -5)),
                      "body.step -5: Input should be greater than or equal to 0"),
    "boolean step": (lambda: _doctored(_sample("run_end"), _set("body.step", True)),
                     "body.step True: Input should be a valid integer"),
    "missing field": (lambda: _doctored(_sample("status"), lambda h: h["body"].pop("dropped")),
                      "body.dropped: Field required"),
    "extra field": (lambda: _doctored(_sample("run_end"), _set("body.colour", "red")),
                    "body.colour 'red': Extra inputs are not permitted"),
    "scalar not a number": (lambda: _doctored(_sample("scalars"), _set("body.values.loss", "low")),
                            "body.values.loss 'low': expected a number"),
    "run end status": (lambda: _doctored(_sample("run_end"), _set("body.status", "paused")),
                       "body.status 'paused': Input should be 'finished', 'detached' or 'failed'"),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_bad_frames_are_refused_with_a_message_naming_the_problem(name):
    make, expected = BAD_FRAMES[name]
    with pytest.raises(FrameRejected) as caught:
        parse_frame(make())
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_rejection_carries_seq_and_run_id_when_the_header_has_them():
    frame = _snapshot_with(sample_ids=np.array([1, 1, 2, 3, 4, 5], np.int64))
    with pytest.raises(FrameRejected) as caught:
        parse_frame(frame)
    assert (caught.value.seq, caught.value.run_id) == (7, RUN)
    with pytest.raises(FrameRejected) as caught:
        parse_frame(b"SCAMgarbage")
    assert (caught.value.seq, caught.value.run_id) == (None, None)


def test_many_problems_are_condensed_to_one_line():
    def wreck(header):
        header["body"] = {"step": -1, "dropped": "x", "spooled": None, "overhead": "fast",
                          "snapshot_every": 1.5, "queue_depth": -2}
    with pytest.raises(FrameRejected) as caught:
        parse_frame(_doctored(_sample("status"), wreck))
    text = str(caught.value)
    assert text.startswith("invalid status frame: body.step -1:")
    assert "and 3 more" in text and "\n" not in text
