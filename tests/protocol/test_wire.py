"""The binary frame format: every message kind round-trips; damaged frames are refused clearly."""

import math
from enum import Enum
from types import MappingProxyType

import numpy as np
import pytest

from sentrycam.protocol import messages as m
from sentrycam.protocol import wire
from sentrycam.protocol.container import JS_NONFINITE, json_safe


def _examples(rng: np.random.Generator) -> list:
    n = 6
    return [
        m.RunStart(run_id="r1", name="demo", started_at=1.5,
                   config={"layers": ["fc:input"], "every": 5}),
        m.ProbeSet(run_id="r1", sample_ids=np.arange(n, dtype=np.int64),
                   labels=rng.integers(0, 3, n), split=np.zeros(n, np.uint8)),
        m.Scalars(run_id="r1", step=4, wall_time=2.0,
                  values={"loss": math.nan, "lr": 0.1, "g": math.inf}),
        m.LayerStats(run_id="r1", step=4, layers=("a", "b"), stats=("grad_norm", "dead_frac"),
                     values=rng.random((2, 2), dtype=np.float32)),
        m.Snapshot(run_id="r1", step=5, epoch=1, sample_ids=np.arange(n, dtype=np.int64),
                   outputs={"pred": np.arange(n, dtype=np.int64),
                            "confidence": np.ones(n, np.float32)},
                   features={"fc:input": rng.random((n, 8)).astype(np.float16),
                             "features.3": rng.random((n, 4)).astype(np.float16)},
                   nonfinite={"fc:input": 0, "features.3": 2}),
        m.Event(run_id="r1", step=5, wall_time=3.0, event="nonfinite", message="NaN in a",
                payload={"n": 2}),
        m.Status(run_id="r1", step=6, dropped=1, spooled=2, overhead=0.004, snapshot_every=50,
                 queue_depth=0),
        m.RunEnd(run_id="r1", step=6, status="finished"),
    ]


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


@pytest.mark.parametrize("index", range(8))
def test_every_kind_round_trips(index):
    message = _examples(np.random.default_rng(0))[index]
    seq, back = wire.decode(wire.encode(message, seq=41 + index, time=9.0))
    assert seq == 41 + index
    assert type(back) is type(message)
    for name in message.__dataclass_fields__:
        assert _equal(getattr(message, name), getattr(back, name)), name


def test_header_names_kind_version_and_arrays():
    snapshot = _examples(np.random.default_rng(0))[4]
    header, arrays = wire.split_frame(wire.encode(snapshot, seq=3, time=1.0))
    assert (header["v"], header["kind"], header["seq"]) == (m.SCHEMA_VERSION, "snapshot", 3)
    assert arrays["features/fc:input"].dtype == np.float16
    assert arrays["features/fc:input"].shape == (6, 8)


@pytest.mark.parametrize("damage, phrase", [
    (lambda b: b[:3], "too short"),
    (lambda b: b"XXXX" + b[4:], "magic"),
    (lambda b: b[:4] + bytes([9]) + b[5:], "version"),
    (lambda b: b[:-5], "frame ends first"),
    (lambda b: b + b"\x00\x01", "trailing"),
    (lambda b: b[:9] + b"X" + b[10:], "JSON"),
])
def test_damaged_frames_are_refused_with_a_reason(damage, phrase):
    frame = wire.encode(_examples(np.random.default_rng(0))[4], seq=1, time=1.0)
    with pytest.raises(wire.FrameError, match=phrase):
        wire.split_frame(damage(frame))


def test_text_payload_is_refused():
    with pytest.raises(wire.FrameError, match="binary"):
        wire.split_frame("hello")


def test_unknown_kind_is_refused():
    header, arrays = wire.split_frame(wire.encode(_examples(np.random.default_rng(0))[7], 1, 1.0))
    header["kind"] = "mystery"
    with pytest.raises(wire.FrameError, match="unknown message kind"):
        wire.build_message(header, arrays)


def test_json_safe_spells_a_value_the_same_whatever_python_type_carries_it():
    class Kind(str, Enum):
        A = "a"

    nested = {"f": 1.5, "nan": math.nan, "inf": math.inf, "ninf": -math.inf, "i": 3, "b": True,
              "none": None, "enum": Kind.A, 4: "key", "seq": (1, [math.inf, 2.0])}
    as_numpy = {"f": np.float64(1.5), "nan": np.float32(math.nan), "inf": np.float64(math.inf),
                "ninf": np.float32(-math.inf), "i": np.int64(3), "b": np.bool_(True),
                "none": None, "enum": Kind.A, 4: "key",
                "seq": np.array([1, 2]), "more": [np.array([math.inf, 2.0])]}
    want = {"f": 1.5, "nan": "nan", "inf": "inf", "ninf": "-inf", "i": 3, "b": True,
            "none": None, "enum": Kind.A, "4": "key", "seq": [1, ["inf", 2.0]]}
    assert json_safe(nested) == want
    assert json_safe(MappingProxyType(nested)) == want  # any mapping, not only a dict
    assert json_safe(as_numpy) == {**want, "seq": [1, 2], "more": [["inf", 2.0]]}
    assert json_safe([math.nan, -math.inf], JS_NONFINITE) == ["NaN", "-Infinity"]
