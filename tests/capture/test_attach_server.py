"""attach(db=...) end to end: a real local server, a real websocket, a real DuckDB file."""

import json
import urllib.request

import pytest

from sentrycam import capture
from sentrycam.capture.launcher import stop_local_server

pytestmark = pytest.mark.slow


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_attach_with_a_db_starts_a_server_and_everything_arrives(tmp_path, make_model, data,
                                                                 train, monkeypatch):
    monkeypatch.delenv("SENTRYCAM_URL", raising=False)
    db = tmp_path / "runs" / "sentrycam.duckdb"
    model = make_model("cnn")
    x, y = data("cnn", n=64)
    try:
        run = capture.attach(model, probe=(x, y), heldout=(x[:16], y[:16]), db=db, every=2,
                             overhead_budget=None, run_name="cnn-test")
        assert run.url.startswith("http://127.0.0.1:")
        train(model, x, y, 4)
        run.log(val_loss=0.25)
        run.detach()
        counters = run.counters()
        assert counters.dropped == 0 and counters.errors == 0
        assert counters.sent == counters.acked > 0  # every message committed by the server
        summary = _get(f"{run.url}/api/runs/{run.run_id}")
        assert summary["name"] == "cnn-test" and summary["status"] == "finished"
        assert summary["last_step"] == 3 and summary["n_snapshots"] == 2  # steps 0 and 2
        assert summary["n_probe"] == 80 and set(run.layers) <= set(summary["layers"])
    finally:
        stop_local_server(db, timeout=20)
