"""ScalarSeries, the scalars of many steps in one frame: it round-trips through the codec with
NaN/Inf kept as values, stands for one Scalars per step, and every way a series can be wrong
is refused with a message naming the problem, on the wire and in an in-process batch alike."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sentrycam.protocol import validation, wire
from sentrycam.protocol.messages import (OLDEST_READ_VERSION, SERIES_MAX_STEPS, Scalars,
                                        ScalarSeries)

RUN = "series0run"


def _series(steps=(4, 5, 7), names=("loss", "lr"), values=None, wall_times=None):
    steps = np.asarray(steps, dtype=np.int64)
    if values is None:
        values = np.column_stack([1.0 / (steps + 10), np.full(len(steps), 0.1)])
    if wall_times is None:
        wall_times = 1700000000.0 + steps.astype(np.float64)
    return ScalarSeries(RUN, tuple(names), steps, np.asarray(wall_times, np.float64),
                        np.asarray(values, np.float64))


def test_a_series_round_trips_with_nan_and_inf_as_values():
    values = np.array([[math.nan, 0.1], [math.inf, 0.1], [-math.inf, 0.05]])
    sent = _series(values=values)
    seq, got = validation.parse_frame(wire.encode(sent, 9, 1.0))
    assert seq == 9 and got.kind == "scalar_series" and got.change == "scalars"
    assert got.names == ("loss", "lr") and got.steps.tolist() == [4, 5, 7]
    assert np.array_equal(got.values, values, equal_nan=True)
    assert np.array_equal(got.wall_times, sent.wall_times)
    assert got.step == 7  # the step its change is announced at: the last one


def test_a_series_stands_for_one_scalars_per_step_in_step_order():
    per_step = _series().scalars()
    assert [s.step for s in per_step] == [4, 5, 7]
    assert per_step[2] == Scalars(RUN, 7, 1700000007.0, {"loss": 1.0 / 17, "lr": 0.1})


def _bad_series() -> dict[str, tuple[ScalarSeries, str]]:
    """Name -> (a series that breaks a rule, text the refusal must contain)."""
    longest = np.arange(SERIES_MAX_STEPS + 1)
    return {
        "steps repeat": (_series(steps=(3, 3, 4)), "steps must increase strictly; 3 follows 3"),
        "steps fall": (_series(steps=(5, 4, 6)), "steps must increase strictly; 4 follows 5"),
        "negative step": (_series(steps=(-1, 0, 1)), "steps values must be at least 0"),
        "no steps": (_series(steps=()), "steps has shape [0]"),
        "too long": (_series(steps=longest), f"at most {SERIES_MAX_STEPS} are allowed"),
        "values not one per name": (_series(values=np.zeros((3, 3))), "values has shape [3, 3]"),
        "values not one per step": (_series(values=np.zeros((2, 2))), "values has shape [2, 2]"),
        "wall times not one per step": (_series(wall_times=np.zeros(4)),
                                        "wall_times has shape [4]"),
        "repeated name": (_series(names=("loss", "loss")), "repeated: ['loss']"),
        "no names": (_series(names=(), values=np.zeros((3, 0))), "names"),
    }


@pytest.mark.parametrize("case", list(_bad_series()))
def test_a_bad_series_is_refused_naming_the_problem(case):
    series, problem = _bad_series()[case]
    with pytest.raises(validation.FrameRejected, match="invalid scalar_series frame") as frame:
        validation.parse_frame(wire.encode(series, 3, 1.0))
    assert problem in str(frame.value) and frame.value.seq == 3 and frame.value.run_id == RUN
    with pytest.raises(ValueError, match="batch item 0 \\(scalar_series") as batch:
        validation.check_batch([(3, series)])
    assert problem in str(batch.value)


def test_a_series_of_other_dtypes_is_refused_on_the_wire():
    series = _series()
    frame = wire.encode(ScalarSeries(RUN, series.names, series.steps.astype(np.int32),
                                     series.wall_times, series.values), 1, 1.0)
    with pytest.raises(validation.FrameRejected, match="steps has dtype int32"):
        validation.parse_frame(frame)


def _with_version(frame: bytes, version: int) -> bytes:
    head_len = int.from_bytes(frame[5:9], "little")
    header = {**json.loads(frame[9:9 + head_len]), "v": version}
    head = json.dumps(header).encode()
    return frame[:5] + len(head).to_bytes(4, "little") + head + frame[9 + head_len:]


@pytest.mark.parametrize("version", range(OLDEST_READ_VERSION, 4))
def test_scalars_frames_of_older_versions_still_read(version):
    sent = Scalars(RUN, 3, 1.0, {"loss": 0.5, "lr": 0.1})
    seq, got = validation.parse_frame(_with_version(wire.encode(sent, 2, 1.0), version))
    assert (seq, got) == (2, sent)
