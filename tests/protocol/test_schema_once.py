"""A field's declaration is the only one: the wire and the store enforce it alike, and the
codec and validators cover every message kind and every array field without drifting."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import numpy as np
import pytest
from websockets.sync.client import connect

from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.store import Store
from sentrycam.backend.testing import isolate_environment, serve_in_thread
from sentrycam.protocol import validation, wire
from sentrycam.protocol.changes import INGEST_KINDS
from sentrycam.protocol.fields import Array, ArrayMap
from sentrycam.protocol.messages import (MESSAGE_TYPES, Event, LayerStats, ProbeSet, RunEnd,
                                        RunStart, Scalars, ScalarSeries, Snapshot, Status)

RUN = "schema0run"
N = 5


def _one_of_each() -> list:
    rng = np.random.default_rng(3)
    ids = np.arange(N, dtype=np.int64)
    return [
        RunStart(RUN, "once", 1.0, {"k": 1}),
        ProbeSet(RUN, ids, rng.integers(0, 3, N), np.zeros(N, np.uint8)),
        Scalars(RUN, 1, 2.0, {"loss": 0.5}),
        ScalarSeries(RUN, ("loss", "lr"), np.array([1, 2]), np.array([2.0, 2.5]),
                     np.array([[0.5, 0.1], [math.nan, 0.1]])),
        LayerStats(RUN, 1, ("a", "b"), ("g",), rng.random((2, 1), dtype=np.float32)),
        Snapshot(RUN, 2, 0, ids, {"pred": ids.copy(), "extra": np.ones(N, np.float64)},
                 {"fc": rng.random((N, 3)).astype(np.float16)}, {"fc": 0}),
        Event(RUN, 2, 3.0, "note", "hi"),
        Status(RUN, 2, 0, 0, 0.01, 10, 0),
        RunEnd(RUN, 3, "finished"),
    ]


def test_every_message_kind_has_a_class_a_frame_model_and_a_batch_model():
    assert {cls.change for cls in MESSAGE_TYPES.values()} == set(INGEST_KINDS)
    assert set(validation.HEADER_MODELS) == set(MESSAGE_TYPES)
    assert set(validation.BODY_MODELS) == set(MESSAGE_TYPES)
    assert {m.kind for m in _one_of_each()} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("cls", list(MESSAGE_TYPES.values()), ids=lambda c: c.kind)
def test_every_array_field_is_declared_framed_and_absent_from_the_header(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    holds_arrays = {name for name, hint in hints.items()
                    if "ndarray" in repr(hint) and name in cls.__dataclass_fields__}
    assert holds_arrays == set(cls.array_fields) | set(cls.array_map_fields)
    for name in holds_arrays:
        assert isinstance(cls.schema.field(name).array, (Array, ArrayMap)), name
    message = next(m for m in _one_of_each() if type(m) is cls)
    header, arrays = wire.split_frame(wire.encode(message, 1, 1.0))
    framed = set(cls.array_fields) | {f"{name}/{key}" for name in cls.array_map_fields
                                      for key in getattr(message, name)}
    assert set(arrays) == framed
    assert not set(header["body"]) & set(cls.array_fields)
    body_fields = {f.name for f in dataclasses.fields(cls)} - {"run_id", *cls.array_fields}
    assert set(validation.BODY_MODELS[cls.kind].model_fields) == body_fields


@pytest.mark.parametrize("message", _one_of_each(), ids=lambda m: m.kind)
def test_a_valid_message_passes_the_frame_and_the_batch_check(message):
    seq, parsed = validation.parse_frame(wire.encode(message, 9, 1.0))
    assert seq == 9 and type(parsed) is type(message)
    validation.check_batch([(9, message)])
    validation.check_batch([(9, parsed)])


def _negative_step_frame() -> bytes:
    """What a broken trainer would send: a scalars frame whose step is -1."""
    frame = wire.encode(Scalars(RUN, 0, 1.0, {"loss": 1.0}), 4, 1.0)
    head_len = int.from_bytes(frame[5:9], "little")
    header = json.loads(frame[9:9 + head_len])
    header["body"]["step"] = -1
    head = json.dumps(header, separators=(",", ":")).encode()
    return frame[:5] + len(head).to_bytes(4, "little") + head + frame[9 + head_len:]


def test_a_negative_step_is_refused_by_the_server_and_by_the_store(tmp_path, monkeypatch):
    isolate_environment(monkeypatch)
    with serve_in_thread(ServerSettings(db_path=tmp_path / "runs.duckdb", port=0)) as server:
        with connect(server.ws_url, open_timeout=10) as ws:
            ws.send(_negative_step_frame())
            reply = json.loads(ws.recv(timeout=15))
        assert reply["type"] == "error" and reply["seq"] == 4 and reply["run_id"] == RUN
        assert "body.step -1: Input should be greater than or equal to 0" in reply["error"]
        assert server.store.run_summaries() == []

    with Store(tmp_path / "other.duckdb") as store:
        with pytest.raises(ValueError, match=r"batch item 0 \(scalars .*step -1: Input should be "
                                             r"greater than or equal to 0"):
            store.write([(0, Scalars(RUN, -1, 1.0, {"loss": 1.0}))])
        assert store.run_summaries() == []


@pytest.mark.parametrize("message, problem", [
    (Scalars(RUN, 2**63, 1.0, {}), "step 9223372036854775808: Input should be less than"),
    (Scalars("has space", 0, 1.0, {}), "run_id 'has space': must be 1-64 characters"),
    (ProbeSet(RUN, np.array([1, 1]), np.zeros(2, np.int64), np.zeros(2, np.uint8)),
     "sample_ids must be unique; repeated: [1]"),
    (ProbeSet(RUN, np.arange(2), np.zeros(2, np.int64), np.array([0, 3], np.uint8)),
     "split values must be 0 (train) or 1 (held out); got [3]"),
    (LayerStats(RUN, 0, ("a", "a"), ("g",), np.zeros((2, 1), np.float32)),
     "layers ['a', 'a']: names must be unique; repeated: ['a']"),
    (Snapshot(RUN, 0, 0, np.arange(2), {}, {"fc": np.zeros((2, 0), np.float16)}),
     "features['fc'] has shape [2, 0]; features['fc'] must be a float array of shape [2, D>0]"),
    (Snapshot(RUN, 0, 0, np.arange(2), {}, {}, {"fc": 1}), "nonfinite names ['fc']"),
    (Event(RUN, 0, math.nan, "", "m"), "event '': String should have at least 1 character"),
])
def test_the_batch_check_applies_the_declared_constraints(message, problem):
    with pytest.raises(ValueError) as caught:
        validation.check_batch([(0, message)])
    assert problem in str(caught.value)
    with pytest.raises(validation.FrameRejected) as caught:
        validation.parse_frame(wire.encode(message, 0, 1.0))
    assert "invalid" in str(caught.value)
