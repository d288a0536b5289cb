"""No cold start: the first map from a fast initial layout, the fit in the background, numba
code kept on disk across processes, the exact kNN graph of small samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sentrycam.projector import Projector, jit_cache, metrics
from sentrycam.projector.graph import exact_neighbors
from tests.projector.maps import FAST, nearest_centroid_accuracy

pytestmark = pytest.mark.projector


def test_first_map_is_the_initial_layout_and_the_fit_keeps_it(snapshots):
    projector = Projector(seed=0, **FAST)
    (features, labels), (later, later_labels) = snapshots[:2]
    ids = np.arange(len(features))
    initial = projector.update(features, ids, labels)
    assert projector.last_info["initial_layout"] and "train" not in projector.last_info["seconds"]
    assert initial.shape == (len(features), 2) and nearest_centroid_accuracy(initial, labels) > 0.95
    fitted = projector.wait_for_fit()
    assert nearest_centroid_accuracy(fitted, labels) > 0.95
    # Anchored to the initial map: the fitted one keeps its arrangement (a small move only).
    moved = np.linalg.norm(fitted - initial, axis=1)
    assert np.median(moved) < 0.2 * np.ptp(initial, axis=0).max()
    assert projector.last_info["steps"] == FAST["first_steps"]
    # Later snapshots link to the fitted map, and the next update has no fit to wait for.
    np.testing.assert_array_equal(projector.past[-1].coords, fitted)
    projector.update(later, ids, later_labels)
    assert projector.wait_for_fit() is None and not projector.last_info["initial_layout"]


def test_initial_layout_is_reproducible_and_as_faithful_as_the_fit(snapshots):
    features, labels = snapshots[0]
    ids = np.arange(len(features))
    runs = [Projector(seed=0, **FAST) for _ in range(2)]
    first, second = (p.update(features, ids, labels) for p in runs)
    np.testing.assert_array_equal(first, second)
    fitted = runs[0].wait_for_fit()
    assert (metrics.neighbour_preservation(features, first, 15)
            >= metrics.neighbour_preservation(features, fitted, 15) - 0.05)


def test_exact_graph_finds_the_true_neighbours_self_first():
    points = np.random.default_rng(3).normal(size=(300, 12)).astype(np.float32)
    points[7] = points[8]  # a duplicate still lists itself first
    indices, dists = exact_neighbors(points, 15)
    assert indices[:, 0].tolist() == list(range(300)) and np.allclose(dists[:, 0], 0)
    truth = metrics.exact_knn(points, 14)
    same = [len(np.intersect1d(a, b)) for a, b in zip(indices[:, 1:], truth)]
    assert np.mean(same) > 13.9 and (np.diff(dists, axis=1) >= -1e-4).all()


CHILD = """
import json, numba
from sentrycam.projector import warm_up, jit_cache
seconds = warm_up()
hits = jit_cache.loaded_from_disk()
print(json.dumps({"seconds": seconds, "hits": hits}))
"""


def _fresh_process(cache) -> dict:
    env = {**os.environ, jit_cache.CACHE_ENV: str(cache)}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_compiled_code_is_kept_on_disk_for_the_next_process(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = _fresh_process(cache)
    assert first["hits"] == 0 and first["seconds"] > 0
    assert list((cache / "numba").rglob("*.nbi")), "nothing was written to the cache folder"
    second = _fresh_process(cache)
    assert second["hits"] > 0  # the layout kernel came from disk
    monkeypatch.setenv(jit_cache.CACHE_ENV, str(cache))
    assert jit_cache.cache_dir() == cache / "numba"
    assert jit_cache.clear() == cache / "numba" and not (cache / "numba").exists()
