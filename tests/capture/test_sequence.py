"""Per-run sequence numbers and the resend plan that answers a server's ask for a seq."""

from __future__ import annotations

from sentrycam.capture.sequence import (LOST_EVENT, MAX_FILL, RunSequences, frame_address,
                                        resend_plan)
from sentrycam.protocol import wire
from sentrycam.protocol.messages import Event, Scalars

RUN = "run-a"


def _frame(seq: int, step: int, run_id: str = RUN) -> bytes:
    return wire.encode(Scalars(run_id, step, 1.0, {"loss": float(step)}), seq, 1.0)


def test_each_run_counts_from_zero_and_carries_on_after_spooled_frames():
    spooled = [_frame(0, 0), _frame(0, 0, "run-b"), _frame(1, 1), b"not a frame"]
    sequences = RunSequences.from_frames(spooled)
    assert (sequences.next(RUN), sequences.next("run-b"), sequences.next("new")) == (2, 1, 0)
    sequences.take(RUN, 2)
    assert sequences.next(RUN) == 3
    assert frame_address(_frame(7, 3)) == (RUN, 7)
    assert frame_address(b"junk") == ("", -1)


def test_the_plan_resends_held_frames_in_order_and_fills_each_hole_with_a_lost_event():
    held = [(6, _frame(6, 60)), (3, _frame(3, 30)), (1, _frame(1, 10)), (4, _frame(4, 40))]
    plan = [wire.decode(frame) for frame in resend_plan(held, RUN, expected=2)]
    assert [seq for seq, _ in plan] == [2, 3, 4, 5, 6]
    kinds = [(type(m).__name__, m.step) for _, m in plan]
    assert kinds == [("Event", 30), ("Scalars", 30), ("Scalars", 40), ("Event", 60),
                     ("Scalars", 60)]
    lost = plan[0][1]
    assert isinstance(lost, Event) and lost.event == LOST_EVENT and lost.payload == {"seq": 2}
    assert lost.run_id == RUN


def test_nothing_held_or_a_hole_too_wide_gives_an_empty_plan():
    assert resend_plan([(1, _frame(1, 1))], RUN, expected=2) == []
    assert resend_plan([(MAX_FILL + 5, _frame(MAX_FILL + 5, 1))], RUN, expected=0) == []
