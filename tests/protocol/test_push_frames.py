"""Push frames: every type survives encode/decode, and the decoder refuses what does not fit."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from sentrycam.protocol import push
from sentrycam.protocol.container import pack
from sentrycam.protocol.push import PUSH_FORMAT, PushFrameError, PushType, decode, encode

RNG = np.random.default_rng(7)
N = 5


def _embedding_arrays(n: int = N) -> dict[str, np.ndarray]:
    return {"sample_id": np.arange(n, dtype=np.int64),
            "xy": RNG.normal(size=(n, 2)).astype(np.float32),
            "pred": RNG.integers(-1, 3, n).astype(np.int64),
            "confidence": RNG.random(n).astype(np.float32),
            "loss": RNG.random(n).astype(np.float32)}


def _samples() -> dict[PushType, tuple[push.PushHeader, dict[str, np.ndarray]]]:
    r = "run0001"
    rows = {"step": np.array([1, 1, 2], np.int64), "value": np.array([0.5, 1e-3, 0.25])}
    return {
        PushType.RUN: (push.RunHeader(run_id=r, summary={"name": "demo", "last_step": 4}), {}),
        PushType.PROBE: (push.ProbeHeader(run_id=r), {
            "sample_id": np.arange(N, dtype=np.int64), "label": np.arange(N) % 2,
            "split": np.zeros(N, np.uint8)}),
        PushType.SCALARS: (push.ScalarsHeader(run_id=r, names=["loss", "lr"]), {
            **rows, "name": np.array([0, 1, 0], np.int32)}),
        PushType.LAYER_STATS: (push.LayerStatsHeader(run_id=r, layers=["fc"], stats=["a", "b"]),
                               {**rows, "layer": np.zeros(3, np.int32),
                                "stat": np.array([0, 1, 0], np.int32)}),
        PushType.SNAPSHOTS: (push.SnapshotsHeader(run_id=r, steps=[0, 5, 10]), {}),
        PushType.EMBEDDING_INDEX: (push.EmbeddingIndexHeader(run_id=r, entries=[(0, "fc", N)]),
                                   {}),
        PushType.EMBEDDING: (push.EmbeddingHeader(run_id=r, step=5, layer="fc", health={
            "intra": 0.5, "inter": 3.0, "classes": [0, 1], "spread": [0.2, 0.4]}),
            _embedding_arrays()),
        PushType.HEALTH: (push.HealthHeader(run_id=r, layer="fc", classes=[0, 1, 2]), {
            "step": np.array([0, 5], np.int64), "intra": np.array([1.0, 0.5]),
            "inter": np.array([2.0, 3.0]), "spread": RNG.random((2, 3))}),
        PushType.QUALITY: (push.QualityHeader(run_id=r, rows=[(5, "fc", "trust_15", 0.9)]), {}),
        PushType.ALERTS: (push.AlertsHeader(run_id=r, alerts=[{"alert_id": 1, "severity": 2}]),
                          {}),
        PushType.STATUS: (push.StatusHeader(run_id=r, step=3, dropped=1, spooled=0,
                                            overhead=0.01, snapshot_every=5, queue_depth=2), {}),
        PushType.PROJECTOR: (push.ProjectorHeader(run_id=r, state={"state": "ready"}), {}),
        PushType.EVENT: (push.EventHeader(run_id=r, step=3, wall_time=1.5, event="lr_change",
                                          message="lr 0.1 -> 0.01"), {}),
        PushType.CAUGHT_UP: (push.CaughtUpHeader(run_id=r), {}),
        PushType.DROPPED: (push.DroppedHeader(run_id=r, count=7), {}),
    }


def _raw(header: dict, payload: bytes = b"", *, magic: bytes = b"SCPF", version: int = 2,
         head_len: int | None = None) -> bytes:
    """Frame bytes built by hand, for what the encoder would never write."""
    head = json.dumps(header).encode()
    length = len(head) if head_len is None else head_len
    return struct.pack("<4sBI", magic, version, length) + head + payload


def test_every_frame_type_survives_a_round_trip():
    samples = _samples()
    assert set(samples) == set(PushType)  # a new frame type needs a sample here
    for push_type, (header, arrays) in samples.items():
        decoded = decode(encode(header, arrays))
        assert decoded.header == header and decoded.header.type is push_type
        assert sorted(decoded.arrays) == sorted(arrays)
        for name, array in arrays.items():
            assert decoded.arrays[name].dtype == array.dtype.newbyteorder("<")
            assert np.array_equal(decoded.arrays[name], array), (push_type, name)


def test_non_finite_numbers_and_big_endian_arrays_come_back_as_sent():
    header = push.EmbeddingHeader(run_id="r", step=1, layer="fc", health={
        "intra": math.nan, "inter": math.inf, "classes": [0], "spread": [-math.inf]})
    arrays = _embedding_arrays()
    arrays["sample_id"] = arrays["sample_id"].astype(">i8")
    frame = decode(encode(header, arrays))
    health = frame.header.health
    assert math.isnan(health.intra) and health.inter == math.inf and health.spread == [-math.inf]
    assert frame.arrays["sample_id"].dtype == np.dtype("<i8")
    assert frame.arrays["sample_id"].tolist() == list(range(N))
    status = push.StatusHeader(run_id="r", step=1, dropped=0, spooled=0, overhead=math.nan,
                               snapshot_every=1, queue_depth=0)
    assert math.isnan(decode(encode(status)).header.overhead)


def test_points_travel_packed_not_as_json_per_point():
    header, _ = _samples()[PushType.EMBEDDING]
    frame = encode(header, _embedding_arrays(2000))
    assert len(frame) < 2000 * (8 + 8 + 8 + 4 + 4) + 1000


@pytest.mark.parametrize("change, problem", [
    (lambda a: a.pop("loss"), "carries arrays"),
    (lambda a: a.update(extra=np.zeros(N, np.float32)), "carries arrays"),
    (lambda a: a.update(xy=a["xy"].astype(np.float64)), "declared <f4"),
    (lambda a: a.update(xy=np.zeros((N, 3), np.float32)), "must be 2"),
    (lambda a: a.update(loss=np.zeros(N + 1, np.float32)), f"N must be {N}"),
])
def test_the_encoder_refuses_arrays_that_do_not_fit_the_declaration(change, problem):
    header, arrays = _samples()[PushType.EMBEDDING]
    arrays = dict(arrays)
    change(arrays)
    with pytest.raises(PushFrameError, match=problem):
        encode(header, arrays)


def test_a_size_named_after_a_header_list_is_that_lists_length():
    header, arrays = _samples()[PushType.HEALTH]
    with pytest.raises(PushFrameError, match="classes must be 3"):
        encode(header, {**arrays, "spread": np.zeros((2, 2))})


def test_header_fields_are_typed_at_encode():
    with pytest.raises(ValueError, match="names"):
        push.ScalarsHeader(run_id="r", names="loss")
    with pytest.raises(ValueError, match="extra"):
        push.DroppedHeader(run_id="r", count=1, reason="slow")


def _probe_ids(dtype: str, shape: list[int], payload_bytes: int) -> bytes:
    """A probe frame whose one array has the given spec."""
    return _raw({"type": "probe", "run_id": "r", "arrays": [
        {"name": "sample_id", "dtype": dtype, "shape": shape}]}, bytes(payload_bytes))


def _good() -> bytes:
    header, arrays = _samples()[PushType.EMBEDDING]
    return encode(header, arrays)


@pytest.mark.parametrize("frame, problem", [
    (lambda: b"SCAM" + _good()[4:], "bad magic"),
    (lambda: _good()[:4] + bytes([1]) + _good()[5:], "version 1 is not supported"),
    (lambda: _good()[:6], "too short"),
    (lambda: _good()[:40], "header length"),
    (lambda: _good()[:-4], r"needs 20 bytes but the frame ends first \(16 left\)"),
    (lambda: _good() + b"\0", "1 trailing bytes"),
    (lambda: "text", "must be binary"),
    (lambda: _raw({}, head_len=PUSH_FORMAT.max_header_bytes + 1) + bytes(64), "at most"),
    (lambda: _raw({"type": "alerts", "run_id": "r", "alerts": [{"x": "a" * 64}],
                   "pad": "b" * PUSH_FORMAT.max_header_bytes}), "at most"),
    (lambda: _raw({"type": "alerts", "run_id": "r", "alerts": [json.loads(
        "[" * PUSH_FORMAT.max_depth + "]" * PUSH_FORMAT.max_depth)]}),
     f"nests {PUSH_FORMAT.max_depth + 2} levels deep; at most {PUSH_FORMAT.max_depth}"),
    (lambda: _probe_ids("<c16", [1], 16), "dtype '<c16'"),
    (lambda: _probe_ids("<i8", [2**40, 2**40], 8), "needs 9671406556917033397649408 bytes"),
    (lambda: _probe_ids("<i8", [1, 1, 1], 8), "invalid shape"),
    (lambda: _probe_ids("<i8", [-1], 0), "invalid shape"),
    (lambda: _raw({"type": "telemetry", "run_id": "r"}), "unknown push frame type 'telemetry'"),
    (lambda: _raw({"run_id": "r"}), "unknown push frame type None"),
    (lambda: _raw({"type": "scalars", "run_id": "r"}), "invalid scalars frame: names"),
    (lambda: _raw({"type": "dropped", "run_id": "r", "count": 1, "why": 2}), "why"),
    (lambda: _raw({"type": "dropped", "run_id": "r", "count": "many"}), "count"),
    (lambda: pack(PUSH_FORMAT, {"type": "embedding", "run_id": "r", "step": 1, "layer": "fc",
                                "health": {"intra": 0, "inter": 0, "classes": [],
                                           "spread": []}},
                  {**_embedding_arrays(), "xy": np.zeros((N, 3), np.float32)}), "must be 2"),
    (lambda: pack(PUSH_FORMAT, {"type": "probe", "run_id": "r"}, {
        "sample_id": np.arange(3), "label": np.arange(2), "split": np.zeros(3, np.uint8)}),
     "N must be 3"),
])
def test_the_decoder_refuses_what_is_not_a_valid_push_frame(frame, problem):
    with pytest.raises(PushFrameError, match=problem):
        decode(frame())


def test_a_run_frame_carries_a_config_as_deep_as_ingest_accepts():
    config = json.loads("[" * 60 + "]" * 60)
    frame = decode(encode(push.RunHeader(run_id="r", summary={"config": config})))
    assert frame.header.summary["config"] == config


def test_the_container_bounds_come_from_the_declarations():
    declared = [spec for model in push.HEADER_MODELS.values() for spec in model.ARRAYS]
    assert PUSH_FORMAT.dtypes == {spec.dtype for spec in declared}
    assert PUSH_FORMAT.max_ndim == max(len(spec.shape) for spec in declared)
    assert issubclass(PushFrameError, ValueError)
