"""``sentrycam inspect --run`` says how the overhead budget shaped a run's capture schedule: the
snapshot interval the capture agent last reported and the latest event of each kind (the agent
sends ``budget_stretched`` and ``over_budget`` with the way to change it), from the file or
through the server that holds it."""

from __future__ import annotations

import json

import pytest

from sentrycam.backend.cli import main
from sentrycam.backend.store import Store
from sentrycam.backend.testing import serve_in_thread
from sentrycam.protocol.messages import Event, RunStart, Status

RUN = "cafe0001" + "0" * 24
STRETCHED = ("the 1% overhead budget spaces capture out on this model: snapshot every 150 "
             "steps; for more, pass a larger attach(overhead_budget=...)")


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "runs.duckdb"
    with Store(path) as store:
        store.write([
            (1, RunStart(run_id=RUN, name="small", started_at=1.0)),
            (2, Event(run_id=RUN, step=40, wall_time=2.0, event="budget_stretched",
                      message="an earlier wording")),
            (3, Event(run_id=RUN, step=90, wall_time=3.0, event="budget_stretched",
                      message=STRETCHED)),
            (4, Status(run_id=RUN, step=299, dropped=0, spooled=0, overhead=0.04,
                       snapshot_every=150, queue_depth=0))])
    return path


def _check(capsys, *where: str) -> None:
    assert main(["inspect", *where, "--run", "small", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)[0]
    assert run["snapshot_every"] == 150
    assert [(e["event"], e["message"]) for e in run["events"]] == [
        ("budget_stretched", STRETCHED)]
    assert main(["inspect", *where, "--run", "small"]) == 0
    table = capsys.readouterr().out
    assert "snapshot_every" in table.splitlines()[0]
    assert f"budget_stretched (step 90): {STRETCHED}" in table


def test_inspect_shows_the_schedule_from_the_file(db, capsys):
    _check(capsys, "--db", str(db))


def test_inspect_shows_the_schedule_through_a_server(db, make_settings, capsys):
    with serve_in_thread(make_settings(db_path=db)) as server:
        _check(capsys, "--url", server.url)
