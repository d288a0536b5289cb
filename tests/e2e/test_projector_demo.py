"""Acceptance of the projector as a user meets it: the demo's snapshots all get 2D maps."""

import json
import os
import subprocess
import sys

import pytest

from sentrycam.capture.budget import MIN_MAP_SAMPLES
from sentrycam.backend.store import Store
from sentrycam.projector.graph import DEFAULT_K
from sentrycam.projector.quality import neighbour_metric

pytestmark = pytest.mark.projector


def _sentrycam(*args: str, env: dict | None = None, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "sentrycam", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_demo_projects_every_snapshot_of_every_layer(tmp_path):
    db = tmp_path / "p.duckdb"
    env = {**os.environ, "SENTRYCAM_PROJECTOR": "on"}  # the suite turns it off by default
    done = _sentrycam("demo", "--steps", "300", "--db", str(db), "--exit-when-done",
                      "--no-browser", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    shown = _sentrycam("inspect", "--db", str(db), "--json")
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)[0]
    assert run["n_snapshots"] >= 5 and len(run["captured_layers"]) >= 2
    # The server projects the deepest two layers of each snapshot by default.
    assert run["n_embeddings"] == run["n_snapshots"] * 2
    with Store(db, read_only=True) as store:
        maps = {(row["step"], row["layer"]) for row in store.embedding_index(run["run_id"])}
        quality = store.projection_quality(run["run_id"])
        rated = {(step, layer) for step, layer, metric in
                 zip(quality["step"], quality["layer"], quality["metric"])
                 if metric == neighbour_metric(DEFAULT_K)}
        last_step, layer = max(maps)
        ids, coords = store.embedding(run["run_id"], layer, last_step)
        mapped = next(row["n"] for row in store.snapshot_index(run["run_id"])
                      if (row["step"], row["layer"]) == (last_step, layer))
    assert len({layer for _, layer in maps}) == 2
    assert rated == maps
    # Every sample of the snapshot is on its map; at the default budget a snapshot may cover a
    # stratified part of the probe, never fewer than MIN_MAP_SAMPLES (capture/budget.py).
    assert len(ids) == mapped and coords.shape == (mapped, 2)
    assert min(MIN_MAP_SAMPLES, run["n_probe"]) <= mapped <= run["n_probe"]
