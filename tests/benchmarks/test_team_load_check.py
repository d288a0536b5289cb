"""The team load benchmark's end check finds what a user would call lost or duplicated data in
a real store: a run not finished, fewer messages stored than its trainer saw acknowledged, a
logged lag probe missing, a row stored twice."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import pytest

from sentrycam.backend.store import Store
from sentrycam.protocol.messages import RunEnd, RunStart, Scalars, Status

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import team_load  # noqa: E402  (a script folder, not a package)

RUN = "b" * 32


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "team.duckdb"
    probe = team_load.LAG_SCALAR
    with Store(path) as store:
        store.write([(0, RunStart(RUN, "load-0", 1.0)), (1, Scalars(RUN, 0, 1.0, {probe: 1.0})),
                     (2, Scalars(RUN, 5, 2.0, {probe: 2.0, "loss": 0.5})),
                     (3, RunEnd(RUN, 5, "finished"))])
    return path


def trainer(**changes):
    return {"run_id": RUN, "acked": 4, "logged": 2, "dropped": 0, "spooled": 0, **changes}


def test_a_complete_run_passes(db):
    check = team_load.store_check(db, [trainer()])
    assert check["runs_complete"] == 1 and check["problems"] == []


@pytest.mark.parametrize("changes", [{"acked": 5}, {"logged": 3}, {"dropped": 1},
                                     {"spooled": 2}])
def test_messages_acknowledged_or_logged_but_not_stored_are_found(db, changes):
    check = team_load.store_check(db, [trainer(**changes)])
    assert check["runs_complete"] == 0 and check["problems"][0]["run_id"] == RUN


def test_a_row_stored_twice_is_found(db):
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO scalars SELECT * FROM scalars WHERE name = 'loss'")
    con.close()
    [problem] = team_load.store_check(db, [trainer()])["problems"]
    assert problem["duplicates"] == 1


def test_a_closing_status_at_the_last_periodic_ones_step_is_no_duplicate(tmp_path):
    path = tmp_path / "status.duckdb"
    with Store(path) as store:
        store.write([(0, RunStart(RUN, "load-0", 1.0)),
                     (1, Status(RUN, 5, dropped=0, spooled=0, overhead=0.01, snapshot_every=20,
                                queue_depth=0)),
                     (2, Status(RUN, 5, dropped=0, spooled=0, overhead=0.02, snapshot_every=20,
                                queue_depth=0)),
                     (3, RunEnd(RUN, 5, "finished"))])
    check = team_load.store_check(path, [trainer(logged=0)])
    assert check["problems"] == []
