"""``sentrycam compact`` and the sizes of ``sentrycam inspect``, on real files and servers."""

from __future__ import annotations

import json
import os

import httpx
import numpy as np
import pytest

from sentrycam.backend.cli import main
from sentrycam.backend.store import Store
from sentrycam.backend.testing import serve_in_thread
from sentrycam.protocol.messages import RunStart, Snapshot

RUN, OTHER = "c" * 32, "d" * 32
N, DIM, SNAPSHOTS = 100, 128, 24
SNAPSHOT_BYTES = N * DIM * 2  # float16 vectors of one snapshot of the one layer


@pytest.fixture
def db(tmp_path):
    """Two runs ("kept", "other") of SNAPSHOTS snapshots of one layer, stored whole."""
    rng = np.random.default_rng(11)
    path = tmp_path / "runs.duckdb"
    with Store(path) as store:
        for run_id, name in ((RUN, "kept"), (OTHER, "other")):
            store.write([(0, RunStart(run_id, name, 1.0, {}))] + [
                (i + 1, Snapshot(run_id, i * 5, 0, np.arange(N), {},
                                 {"fc": rng.standard_normal((N, DIM)).astype(np.float16)}))
                for i in range(SNAPSHOTS)])
    return path


def _inspect(capsys, *args: str) -> list[dict]:
    assert main(["inspect", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_compact_shrinks_the_file_and_inspect_shows_it(db, capsys, monkeypatch):
    monkeypatch.delenv("SENTRYCAM_RETENTION_MAX_SNAPSHOTS", raising=False)
    monkeypatch.delenv("SENTRYCAM_RETENTION_HISTORY", raising=False)
    (before,) = _inspect(capsys, "--db", str(db), "--run", "kept")
    assert before["feature_bytes"] == SNAPSHOTS * SNAPSHOT_BYTES
    assert before["snapshots_with_features"] == SNAPSHOTS
    assert before["store_file_bytes"] == os.path.getsize(db)

    assert main(["compact", "--db", str(db), "--keep-newest", "4", "--history", "1"]) == 0
    out = capsys.readouterr().out
    assert "snapshots (step, layer) lost their feature vectors" in out and "newest 4" in out

    runs = {run["name"]: run for run in _inspect(capsys, "--db", str(db))}
    (after,) = _inspect(capsys, "--db", str(db), "--run", "kept")
    kept = after["snapshots_with_features"]
    assert 4 < kept < 10 and runs["other"]["snapshots_with_features"] == kept
    assert after["feature_bytes"] == kept * SNAPSHOT_BYTES
    assert after["other_bytes"] == before["other_bytes"]
    assert after["store_file_bytes"] == os.path.getsize(db)
    shrunk = before["store_file_bytes"] - after["store_file_bytes"]
    assert shrunk > 0.8 * 2 * (SNAPSHOTS - kept) * SNAPSHOT_BYTES  # two runs compacted
    per_step = {s["step"]: s for s in after["snapshot_bytes"]}
    assert sorted(per_step) == [i * 5 for i in range(SNAPSHOTS)]
    assert [per_step[(SNAPSHOTS - 1 - i) * 5]["feature_bytes"] for i in range(4)] == \
        [SNAPSHOT_BYTES] * 4
    assert sum(s["layers_with_features"] == 0 for s in per_step.values()) == SNAPSHOTS - kept

    assert main(["inspect", "--db", str(db), "--run", "kept"]) == 0
    table = capsys.readouterr().out
    assert "store file: " in table and "bytes per snapshot:" in table
    assert f"{after['feature_bytes'] / 1024:.1f} KiB" in table


def test_compact_one_run_by_name(db, capsys):
    assert main(["compact", "--db", str(db), "--run", "other", "--keep-newest", "2",
                 "--history", "0"]) == 0
    assert f"run {OTHER}" in capsys.readouterr().out
    runs = {run["name"]: run for run in _inspect(capsys, "--db", str(db))}
    assert runs["other"]["feature_bytes"] == 2 * SNAPSHOT_BYTES
    assert runs["kept"]["feature_bytes"] == SNAPSHOTS * SNAPSHOT_BYTES


@pytest.mark.parametrize("args,problem", [
    (["--keep-newest", "0"], "keeps every snapshot's feature vectors"),
    (["--keep-newest", "-3"], "greater than or equal to 0"),
    (["--run", "nope"], "no run matches 'nope'"),
])
def test_compact_refuses_what_it_cannot_do_and_leaves_the_file(db, capsys, args, problem):
    size = os.path.getsize(db)
    assert main(["compact", "--db", str(db), *args]) == 2
    assert problem in capsys.readouterr().err
    assert os.path.getsize(db) == size


def test_inspect_through_a_server_reports_the_same_sizes(db, capsys, make_settings):
    from_file = {run["run_id"]: run for run in _inspect(capsys, "--db", str(db))}
    (one_from_file,) = _inspect(capsys, "--db", str(db), "--run", "kept")
    with serve_in_thread(make_settings(db_path=db)) as server:
        served = {run["run_id"]: run for run in _inspect(capsys, "--url", server.url)}
        (one_served,) = _inspect(capsys, "--url", server.url, "--run", "kept")
        unknown = httpx.get(f"{server.url}/api/runs/{'e' * 32}/storage", timeout=10)
        assert unknown.status_code == 404 and "e" * 32 in unknown.json()["detail"]
    keys = ("feature_bytes", "other_bytes", "snapshots_with_features")
    for run_id, run in from_file.items():
        assert {k: served[run_id][k] for k in keys} == {k: run[k] for k in keys}
    assert one_served["snapshot_bytes"] == one_from_file["snapshot_bytes"]
    assert one_served["store_file_bytes"] > 0


@pytest.mark.slow
def test_compact_refuses_a_file_a_server_holds_and_names_the_way(db, capsys, server_process):
    server = server_process(db=db).start()
    size = os.path.getsize(db)
    assert main(["compact", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert f"a server ({server.url}) holds" in err
    assert f"sentrycam stop --db {db}" in err and f"sentrycam inspect --url {server.url}" in err
    (through_server,) = _inspect(capsys, "--db", str(db), "--run", "kept")
    assert through_server["feature_bytes"] == SNAPSHOTS * SNAPSHOT_BYTES
    server.stop()
    assert os.path.getsize(db) >= size
    assert main(["compact", "--db", str(db), "--keep-newest", "3"]) == 0
