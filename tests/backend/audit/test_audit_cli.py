"""``sentrycam alerts``: from a database file no server holds, and through a running server."""

from __future__ import annotations

import json

import pytest

from sentrycam.backend.cli import main
from sentrycam.backend.store import Store
from tests.backend.audit.trainer import train_streamed
from sentrycam.backend.testing import serve_in_thread

ALERT = {"step": 12, "detector": "loss_divergence", "layer": None, "severity": 2,
         "magnitude": 9.5, "duration": 4, "evidence": {"steps": [10, 11, 12]},
         "message": "training loss rose", "suggestion": "Hypothesis (confidence 0.60): lr",
         "confidence": 0.6}


def _store_with_alert(path) -> str:
    with Store(path) as store:
        from sentrycam.protocol.messages import RunStart

        store.write([(1, RunStart(run_id="r1", name="one", started_at=0.0))])
        store.upsert_alert("r1", ALERT)
        store.upsert_alert("r1", {**ALERT, "step": 30, "severity": 1, "detector": "stagnation"})
    return "r1"


def test_alerts_json_from_a_file(tmp_path, capsys):
    db = tmp_path / "runs.duckdb"
    _store_with_alert(db)
    assert main(["alerts", "--db", str(db), "--run", "r1", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(a["step"], a["detector"], a["severity"]) for a in listed] == [
        (12, "loss_divergence", 2), (30, "stagnation", 1)]
    assert listed[0]["evidence"] == {"steps": [10, 11, 12]}
    assert main(["alerts", "--db", str(db), "--min-severity", "2"]) == 0
    table = capsys.readouterr().out
    assert "loss_divergence" in table and "stagnation" not in table
    assert "Hypothesis (confidence 0.60)" in table


def test_alerts_unknown_run_and_missing_file(tmp_path, capsys):
    db = tmp_path / "runs.duckdb"
    _store_with_alert(db)
    assert main(["alerts", "--db", str(db), "--run", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["alerts", "--db", str(tmp_path / "missing.duckdb")]) == 2


@pytest.mark.slow
def test_alerts_through_the_server_that_holds_the_file(make_settings, capsys):
    with serve_in_thread(make_settings()) as server:
        run_id = train_streamed(server.url, steps=200, spike_at=150)
        for _ in range(3):
            server.wait_written(30)
            server.app.state.audit.wait_idle(30)
        assert main(["alerts", "--url", server.url, "--run", run_id, "--json",
                     "--min-severity", "2"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert listed and all(a["severity"] >= 2 and a["run_id"] == run_id for a in listed)
        assert main(["alerts", "--url", server.url, "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)) >= len(listed)
