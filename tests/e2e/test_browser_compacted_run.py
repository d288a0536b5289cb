"""A run compacted by the retention policy still replays in the dashboard (issue 13, point 4):
real training into a real server, `sentrycam compact` on the stopped server's file, then the
dashboard in a real headless Chromium against a new server on the compacted file."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest

from sentrycam import capture
from sentrycam.backend.cli import main
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.testing import StandInProjector, isolate_environment, serve_in_thread
from tests.e2e.browser import latest_step, points, wait_until

pytestmark = pytest.mark.browser
EVERY, STEPS, PROBE = 4, 80, 150


def _get(url: str, path: str) -> list | dict:
    return httpx.get(f"{url}{path}", timeout=10).json()


def _inspect(capsys, db) -> dict:
    assert main(["inspect", "--db", str(db), "--run", "compacted", "--json"]) == 0
    return json.loads(capsys.readouterr().out)[0]


def _train_a_run(db, trainer) -> tuple[str, int]:
    """A finished run with every snapshot's features and a map of each; (run_id, maps)."""
    settings = ServerSettings(db_path=db, port=0, retention_max_snapshots=0)  # keep all
    with serve_in_thread(settings) as server, StandInProjector(server.app):
        run = capture.attach(trainer.model, (trainer.data.x_train[:PROBE],
                                             trainer.data.y_train[:PROBE]),
                             url=server.url, every=EVERY, optimizer=trainer.optimizer,
                             criterion=trainer.criterion, run_name="compacted",
                             overhead_budget=None)  # a fixed schedule: every EVERY steps
        trainer.train(STEPS)
        run.detach()
        snapshots = _get(server.url, f"/api/runs/{run.run_id}/snapshots")
        wait_until(lambda: len(_get(server.url, f"/api/runs/{run.run_id}/embeddings"))
                   == len(snapshots), what="a map of every snapshot and layer")
    return run.run_id, len(snapshots)


def test_a_compacted_run_replays_its_maps_in_the_dashboard(tmp_path, monkeypatch, capsys,
                                                          page, trainer):
    isolate_environment(monkeypatch)
    db = tmp_path / "compact.duckdb"
    run_id, n_maps = _train_a_run(db, trainer)
    before = _inspect(capsys, db)
    assert before["snapshots_with_features"] == n_maps >= 40  # 20 steps, 2+ layers

    assert main(["compact", "--db", str(db), "--keep-newest", "2", "--history", "1"]) == 0
    assert "lost their feature vectors" in capsys.readouterr().out
    after = _inspect(capsys, db)
    assert after["snapshots_with_features"] < n_maps / 2
    assert after["feature_bytes"] < before["feature_bytes"] / 2
    assert after["store_file_bytes"] < before["store_file_bytes"]
    assert after["other_bytes"] == before["other_bytes"] and after["n_embeddings"] == n_maps

    with serve_in_thread(ServerSettings(db_path=db, port=0)) as server:
        snapshots = _get(server.url, f"/api/runs/{run_id}/snapshots")
        thinned = sorted({s["step"] for s in snapshots if not s["has_features"]})
        assert thinned, "compaction left every snapshot its features"
        page.goto(f"{server.url}/?run={run_id}")
        wait_until(lambda: latest_step(page) == after["last_step"], what="the run's last step")
        wait_until(lambda: points(page)["n"] == PROBE, what="the newest map drawn")
        slider = page.locator(".sc-embedding input[type=range]").first
        slider.focus()
        slider.press("Home")  # the replay's first position, then forward to a thinned step
        steps = sorted({s["step"] for s in snapshots})
        for _ in range(steps.index(thinned[0])):
            slider.press("ArrowRight")
        wait_until(lambda: _shown_step(page) == thinned[0],
                   what=f"the replay at step {thinned[0]}, whose features were deleted")
        layer = page.locator(".sc-embedding select").first.input_value()
        stored = _get(server.url, f"/api/runs/{run_id}/embedding?layer={layer}"
                                  f"&step={thinned[0]}")
        wait_until(lambda: _same_points(points(page), stored),
                   what="the thinned snapshot's stored map drawn point for point")


def _shown_step(page) -> int | None:
    shown = re.search(r"step (\d+)", page.locator(".sc-map-step").first.inner_text())
    return int(shown.group(1)) if shown else None


def _same_points(drawn: dict, stored: dict) -> bool:
    return (drawn["n"] == len(stored["x"])
            and np.allclose(np.sort(drawn["x"]), np.sort(stored["x"]), atol=1e-4)
            and np.allclose(np.sort(drawn["y"]), np.sort(stored["y"]), atol=1e-4))
