"""Parquet export of one run, read back with pyarrow."""

from __future__ import annotations

import time

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from sentrycam.backend.store import Store, UnknownRunError
from sentrycam.protocol.messages import (Event, LayerStats, ProbeSet, RunEnd, RunStart, Scalars,
                                        Snapshot)

RUN, OTHER = "d" * 32, "e" * 32
N, STEPS, LAYERS = 40, (0, 10, 20), {"fc:input": 12, "block2": 6}


def _run_batch(rng, run_id):
    """Every message kind for one run; returns (batch, features by (step, layer))."""
    batch = [RunStart(run_id, f"run {run_id[:4]}", time.time(), {"seed": 3}),
             ProbeSet(run_id, np.arange(N), rng.integers(0, 4, N), np.zeros(N, np.uint8))]
    features = {}
    for step in STEPS:
        feats = {layer: rng.standard_normal((N, d)).astype(np.float16)
                 for layer, d in LAYERS.items()}
        features.update({(step, layer): f for layer, f in feats.items()})
        batch += [Scalars(run_id, step, 1.0 + step, {"loss": 1.0 / (step + 1), "lr": 0.1}),
                  LayerStats(run_id, step, ("conv", "fc"), ("grad_norm", "act_std", "dead"),
                             rng.random((2, 3)).astype(np.float32)),
                  Snapshot(run_id, step, 0, np.arange(N), {"pred": rng.integers(0, 4, N)},
                           feats)]
    batch += [Event(run_id, 20, 3.0, "note", "halfway", {"k": 1}),
              RunEnd(run_id, 20, "finished")]
    return list(enumerate(batch)), features


@pytest.fixture
def stored(tmp_path):
    rng = np.random.default_rng(99)
    path = tmp_path / "runs.duckdb"
    with Store(path) as store:
        batch, features = _run_batch(rng, RUN)
        store.write(batch)
        store.write(_run_batch(rng, OTHER)[0])  # must not leak into RUN's export
    # Tables filled by later parts (projector, audit) get a few rows directly.
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO embeddings SELECT ?, 20, 'fc:input', i, i * 0.5, -i "
                "FROM range(?) t(i)", [RUN, N])
    con.execute("INSERT INTO alerts (run_id, step, detector, severity, created_at, updated_at) "
                "VALUES (?, 20, 'loss_divergence', 2, now(), now())", [RUN])
    con.close()
    return path, features


def test_export_writes_one_readable_parquet_file_per_table_with_the_runs_rows(stored, tmp_path):
    path, features = stored
    with Store(path, read_only=True) as store:  # export works without write access
        paths = store.export_run(RUN, tmp_path / "export")
    names = [p.name for p in paths]
    assert names == [f"{t}.parquet" for t in (
        "runs", "probe_samples", "scalars", "layer_stats", "snapshots", "features",
        "predictions", "embeddings", "projection_quality", "alerts", "events")]
    tables = {p.stem: pq.read_table(p) for p in paths}
    n_layers, n_steps = len(LAYERS), len(STEPS)
    expected_rows = {"runs": 1, "probe_samples": N, "scalars": 2 * n_steps,
                     "layer_stats": 6 * n_steps, "snapshots": n_layers * n_steps,
                     "features": N * n_layers * n_steps, "predictions": N * n_steps,
                     "embeddings": N, "projection_quality": 0, "alerts": 1, "events": 1}
    assert {name: t.num_rows for name, t in tables.items()} == expected_rows
    for name, table in tables.items():
        assert set(table.column("run_id").to_pylist()) <= {RUN}, name
    assert tables["runs"].column("name").to_pylist() == [f"run {RUN[:4]}"]

    # Feature vectors are float16 bytes: each row decodes to what was sent.
    rows = tables["features"].to_pydict()
    for step, layer, sample_id, vec in zip(rows["step"], rows["layer"], rows["sample_id"],
                                           rows["vec"]):
        np.testing.assert_array_equal(np.frombuffer(vec, "<f2"),
                                      features[(step, layer)][sample_id])


def test_export_of_an_unknown_run_raises_and_writes_nothing(stored, tmp_path):
    path, _ = stored
    out = tmp_path / "nothing"
    with Store(path) as store, pytest.raises(UnknownRunError, match="unknown run_id 'zzz'"):
        store.export_run("zzz", out)
    assert not out.exists()
