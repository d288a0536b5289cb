"""Every change kind reaches dashboards as frames (or is deliberately not pushed), and every
frame type the server sends has a handler in the run view (or is deliberately ignored)."""

from __future__ import annotations

import typing

import numpy as np

from sentrycam.backend.push_frames import LIVE_FRAMES, NOT_PUSHED
from sentrycam.frontend.client import PushSubscription
from sentrycam.frontend.run_view import FRAME_HANDLERS, IGNORED_FRAMES
from sentrycam.protocol import push
from sentrycam.protocol.changes import DERIVED_KINDS, INGEST_KINDS, ChangeKind
from sentrycam.protocol.messages import MESSAGE_TYPES


def test_every_change_kind_is_pushed_or_listed_as_not_pushed():
    assert set(LIVE_FRAMES) | NOT_PUSHED == set(ChangeKind)
    assert not set(LIVE_FRAMES) & NOT_PUSHED


def test_every_frame_type_has_a_handler_in_the_run_view_or_is_ignored():
    assert set(FRAME_HANDLERS) | IGNORED_FRAMES == set(push.PushType)
    assert not set(FRAME_HANDLERS) & IGNORED_FRAMES


def test_each_handler_takes_the_header_of_its_frame_type():
    for push_type, handler in FRAME_HANDLERS.items():
        declared = typing.get_type_hints(handler)["header"]
        assert declared in (typing.Any, push.HEADER_MODELS[push_type]), push_type


def test_ingest_kinds_are_the_message_kinds():
    assert {ChangeKind(cls.change) for cls in MESSAGE_TYPES.values()} == set(INGEST_KINDS)
    assert set(INGEST_KINDS) | set(DERIVED_KINDS) == set(ChangeKind)


def test_the_client_skips_a_bad_frame_and_takes_the_next():
    taken: list[push.PushFrame] = []
    subscription = PushSubscription("ws://127.0.0.1:9/ws/runs/r", taken.append)
    good = push.encode(push.ProbeHeader(run_id="r"), {
        "sample_id": np.arange(3), "label": np.arange(3), "split": np.zeros(3, np.uint8)})
    subscription._receive(good[:-1])
    subscription._receive(good)
    assert subscription.rejected == 1 and "bytes" in subscription.last_error
    assert [frame.header.type for frame in taken] == [push.PushType.PROBE]
    assert taken[0].arrays["sample_id"].tolist() == [0, 1, 2]
