"""The engine survives a server restart in the middle of a run: a new engine meeting the run
mid-way catches up from the store, so it raises the same alerts as one that saw the whole run,
keeps the stored rows of persisting alerts (no duplicates) and announces nothing twice."""

from __future__ import annotations

import shutil

import pytest

from sentrycam.backend.audit.engine import AuditEngine
from sentrycam.backend.audit.history import stored_changes
from sentrycam.backend.audit.process import AuditProcess
from sentrycam.backend.audit.replay import replay_run
from sentrycam.backend.feed import ChangeFeed
from sentrycam.backend.store import Store
from tests.backend.audit.trainer import train_streamed
from sentrycam.backend.testing import serve_in_thread

pytestmark = pytest.mark.slow
RESTART_AT = 160  # after the spike at 120 and its first alerts, while they still persist


def _key(alert) -> tuple:
    get = alert.get if isinstance(alert, dict) else lambda name: getattr(alert, name)
    confirmed = get("confirmed_step") if not isinstance(alert, dict) else \
        (alert["evidence"] or {}).get("confirmed_step")
    return (get("detector"), get("layer"), get("step"), get("severity"), confirmed)


def _deliver(engine: AuditEngine | AuditProcess, feed: ChangeFeed, changes: list) -> None:
    for change in changes:
        feed.publish([change])
    assert engine.wait_idle(120)


@pytest.mark.parametrize("engine_kind", [AuditEngine, AuditProcess], ids=["thread", "process"])
def test_engine_restarted_mid_run_continues_where_it_was(make_settings, tmp_path, engine_kind):
    with serve_in_thread(make_settings(audit=False)) as server:
        run_id = train_streamed(server.url, steps=220, spike_at=120)
        server.wait_written(30)
        recorded = server.settings.db_path
    db = tmp_path / "restarted.duckdb"
    shutil.copy(recorded, db)
    with Store(db) as store:
        whole, _ = replay_run(store, run_id)  # one engine that saw the whole run
        assert any(a.step < RESTART_AT <= a.last_step for a in whole), \
            "the test needs an alert that persists across the restart"
        changes = list(stored_changes(store, run_id))
        before = [c for c in changes if c.step is None or c.step < RESTART_AT]
        after = [c for c in changes if c.step is not None and c.step >= RESTART_AT]
        announced = []
        for part in (before, after):  # a fresh feed and engine per "server process"
            feed = ChangeFeed()
            feed.subscribe(lambda batch: announced.extend(
                c.message["alert_id"] for c in batch if c.kind == "alert"), name="test")
            engine = engine_kind(store, feed)  # the process one catches up through the server
            engine.start()
            _deliver(engine, feed, part)
            engine.stop()
        stored = store.alerts(run_id)
    assert sorted(map(_key, stored)) == sorted(map(_key, whole))
    ids = [a["alert_id"] for a in stored]
    assert len(ids) == len(set(ids)) == len(whole)
    assert set(announced) == set(ids)
