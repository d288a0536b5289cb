"""The issue's acceptance path, as a user runs it: demo, then inspect, then export."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from sentrycam.backend.cli_demo import DEMO_PROBE_SIZE

pytestmark = pytest.mark.slow


def _sentrycam(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentrycam", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("demo") / "a.duckdb"
    done = _sentrycam("demo", "--steps", "300", "--db", str(db), "--exit-when-done", "--no-browser")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sentrycam dashboard: http://127.0.0.1:" in done.stdout
    # the demo runs at attach's defaults and says what they cost against the budget
    assert "of the training time, against attach's default overhead budget of 1%" in done.stdout
    return db


def test_inspect_after_demo_shows_one_complete_run(demo_db):
    shown = _sentrycam("inspect", "--db", str(demo_db), "--json")
    assert shown.returncode == 0, shown.stderr
    runs = json.loads(shown.stdout)
    assert len(runs) == 1
    run = runs[0]
    assert run["last_step"] >= 299
    assert run["n_scalar_rows"] >= 300
    assert run["n_snapshots"] >= 5
    assert run["n_probe"] == DEMO_PROBE_SIZE  # a probe sized for the default budget
    assert run["dropped"] == 0
    assert run["status"] == "finished"
    assert len(run["captured_layers"]) >= 2 and run["telemetry_layers"]
    assert not set(run["captured_layers"]) & set(run["telemetry_layers"])
    assert run["capture_overhead"] is not None


def test_inspect_human_table_and_unknown_run(demo_db):
    table = _sentrycam("inspect", "--db", str(demo_db))
    assert table.returncode == 0 and "demo-cnn-seed0" in table.stdout
    missing = _sentrycam("inspect", "--db", str(demo_db), "--run", "no-such-run")
    assert missing.returncode == 2 and "no run matches 'no-such-run'" in missing.stderr
    assert "demo-cnn-seed0" in missing.stderr  # the runs there are
    run_id = json.loads(_sentrycam("inspect", "--db", str(demo_db), "--json").stdout)[0]["run_id"]
    for given in (run_id[:6], "demo-cnn-seed0"):  # as the dashboard shows it; by name
        one = _sentrycam("inspect", "--db", str(demo_db), "--run", given, "--json")
        assert one.returncode == 0 and json.loads(one.stdout)[0]["run_id"] == run_id


def test_export_writes_readable_parquet(demo_db, tmp_path):
    run_id = json.loads(_sentrycam("inspect", "--db", str(demo_db), "--json").stdout)[0]["run_id"]
    out = tmp_path / "export"
    done = _sentrycam("export", "--db", str(demo_db), "--run", run_id, "--out", str(out))
    assert done.returncode == 0, done.stderr
    scalars = pq.read_table(out / "scalars.parquet")
    assert scalars.num_rows >= 300
    features = pq.read_table(out / "features.parquet")
    assert features.num_rows > 0


def test_missing_database_is_a_clear_error(tmp_path):
    done = _sentrycam("inspect", "--db", str(tmp_path / "nope.duckdb"), "--json")
    assert done.returncode == 2
    assert "no database file" in done.stderr
