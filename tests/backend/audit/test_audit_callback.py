"""The opt-in capture-side reaction: alerts travel back on the ingest websocket and reach
``attach(on_alert=...)`` on the training thread, which may lower the learning rate or stop."""

from __future__ import annotations

import threading

import pytest

from tests.backend.audit.trainer import train_streamed
from sentrycam.backend.testing import serve_in_thread

pytestmark = pytest.mark.slow


def test_critical_alert_lowers_the_lr_and_stops_training(make_settings):
    received, threads, seen, acted = [], set(), {}, []

    def react(alert, control):
        received.append(alert)
        threads.add(threading.current_thread().name)
        if alert["severity"] >= 2 and not acted:
            acted.append(alert)
            control.lower_lr(0.1)
            control.stop()

    def remember(step, run, optimizer):
        seen.setdefault("lr", []).append(optimizer.param_groups[0]["lr"])
        if run.stop_requested and "stopped_at" not in seen:
            seen["stopped_at"] = step

    with serve_in_thread(make_settings()) as server:
        train_streamed(server.url, steps=600, spike_at=150, on_step=remember, on_alert=react)
        relay = server.app.state.alert_relay
        assert relay.sent > 0
    assert received and all("detector" in a and "severity" in a for a in received)
    assert threads == {threading.main_thread().name}  # called on the training thread
    stopped = seen["stopped_at"]
    assert 150 <= stopped < 599, "the loop stopped on the alert, well before its end"
    assert seen["lr"][stopped] == pytest.approx(3e-3 * 30 * 0.1)


def test_without_a_callback_alerts_do_not_touch_training(make_settings):
    lrs = []
    with serve_in_thread(make_settings()) as server:
        train_streamed(server.url, steps=220, spike_at=150,
                       on_step=lambda step, run, opt: lrs.append(opt.param_groups[0]["lr"]))
        for _ in range(3):
            server.wait_written(30)
            server.app.state.audit.wait_idle(30)
        assert server.store.alerts(min_severity=2)
    assert lrs[-1] == pytest.approx(3e-3 * 30) and len(lrs) == 220
