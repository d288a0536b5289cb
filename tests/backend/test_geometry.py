"""The one class-geometry definition: its rules, its subsampling, and that the dashboard's
cluster health and the geometry detectors read the same numbers off the same stored map."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest
import torch

from sentrycam.backend import geometry
from sentrycam.backend.geometry import class_geometry, class_layout, cluster_health
from sentrycam.capture.activations import effective_rank as capture_effective_rank
from sentrycam.frontend.client import ApiClient
from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.messages import SPLIT_HELDOUT, SPLIT_TRAIN, ProbeSet, RunStart
from sentrycam.backend.feed import Change


def blobs(separation: float, dim: int, seed: int, per_class: int = 60,
          classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Unit Gaussian classes, class c centred at ``separation`` along axis c: float32 [N, dim],
    labels int64 [N]."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    centres = separation * np.eye(classes, dim)
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def test_metrics_rank_well_and_poorly_separated_classes():
    good = class_geometry(*blobs(8.0, 16, 0))
    bad = class_geometry(*blobs(1.0, 16, 0))
    assert good["ratio"] < bad["ratio"]
    assert good["davies_bouldin"] < bad["davies_bouldin"]
    assert good["knn_consistency"] > 0.95 > bad["knn_consistency"]
    assert good["leaving"] < 0.02 < bad["leaving"]
    assert min(good["class_separation"].values()) > max(bad["class_separation"].values())
    assert class_geometry(np.zeros((10, 3)), np.zeros(10, dtype=np.int64)) is None


def test_unlabelled_points_and_single_point_classes_are_left_out_everywhere():
    points, labels = blobs(6.0, 4, 1, per_class=40, classes=3)
    far = np.full((5, 4), 500.0)  # would dominate every number if it counted
    with_extras = np.concatenate([points, far, far[:1]])
    extra_labels = np.concatenate([labels, np.full(5, -1), [7]])  # unlabelled, a lone class 7
    clean = class_geometry(points, labels)
    extras = class_geometry(with_extras, extra_labels)
    for key in ("intra", "inter", "ratio", "davies_bouldin", "knn_consistency", "leaving"):
        assert extras[key] == pytest.approx(clean[key], rel=1e-9), key
    assert set(extras["class_spread"]) == {0, 1, 2} and extras["n"] == len(labels)
    assert cluster_health(with_extras, extra_labels) == pytest.approx(
        cluster_health(points, labels), rel=1e-9)
    spread = class_layout(with_extras, extra_labels).spread_of(np.array([0, 1, 2, 7]))
    assert np.isnan(spread[3]) and np.isfinite(spread[:3]).all()
    one_class = labels == 0
    assert all(math.isnan(v) for v in cluster_health(points[one_class], labels[one_class]))


def test_cluster_health_values_on_known_clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 4000)
    coords = np.concatenate([rng.normal((0, 0), 1, (4000, 2)), rng.normal((10, 0), 2, (4000, 2))])
    intra, inter = cluster_health(coords, labels)
    assert intra == pytest.approx((2 * 1 + 2 * 4) / 2, rel=0.05)  # variance of 2 axes, per class
    assert inter == pytest.approx(10.0, rel=0.01)


def test_linear_quantities_use_every_point_and_pairwise_ones_a_deterministic_capped_sample():
    points, labels = blobs(3.0, 8, 2, per_class=300)  # 1,500 points
    first, again = class_geometry(points, labels), class_geometry(points, labels)
    assert first == again
    assert first["n"] == 1500 and first["n_pairwise"] == geometry.MAX_PAIRWISE_POINTS
    sample, sample_labels = geometry.pairwise_sample(class_layout(points, labels))
    assert np.bincount(sample_labels).tolist() == [120] * 5  # the class mix is kept
    layout = class_layout(points, labels)
    assert first["intra"] == pytest.approx(float(np.mean([
        ((points[labels == c] - points[labels == c].mean(0)) ** 2).sum(1).mean()
        for c in range(5)])), rel=1e-6)
    assert layout.x.shape == (1500, 8)


@pytest.mark.parametrize("matrix", ["random", "rank_two", "constant", "wide"])
def test_effective_rank_is_one_definition_in_capture_and_backend(matrix):
    rng = np.random.default_rng(3)
    x = {"random": rng.normal(size=(64, 12)),
         "rank_two": rng.normal(size=(64, 2)) @ rng.normal(size=(2, 12)),
         "constant": np.ones((64, 12)),
         "wide": rng.normal(size=(10, 40)) * np.linspace(0.1, 3, 40)}[matrix]
    backend = geometry.effective_rank(x)
    capture = float(capture_effective_rank(torch.from_numpy(x.astype(np.float32))))
    assert capture == pytest.approx(backend, rel=1e-4, abs=1e-6)
    if matrix == "rank_two":
        assert backend < 2.0 + 1e-6


RUN, LAYER, STEP = "geometry-run", "fc:input", 40


@pytest.fixture
def stored_map(server):
    """A run whose probe has held-out and unlabelled samples and one lone sample of class 4,
    and one stored 2D map announced as the projector worker announces it."""
    rng = np.random.default_rng(5)
    n = 900
    labels = np.concatenate([np.arange(n - 1) % 4, [4]]).astype(np.int64)
    labels[::37] = -1
    split = np.where(np.arange(n) % 5 == 0, SPLIT_HELDOUT, SPLIT_TRAIN).astype(np.uint8)
    ids = np.arange(n, dtype=np.int64) * 3
    server.store.write([(0, RunStart(RUN, "geometry", 1.0)),
                        (1, ProbeSet(RUN, ids, labels, split))])
    centres = np.stack([np.maximum(labels, 0) * 4.0, np.zeros(n)], 1)
    coords = (centres + rng.normal(scale=1.0 + np.maximum(labels, 0)[:, None] * 0.3,
                                   size=(n, 2))).astype(np.float32)
    coords[split == SPLIT_HELDOUT] += 30.0  # held-out samples elsewhere: they must not count
    server.store.write_embedding(RUN, LAYER, STEP, ids, coords)
    server.app.state.feed.publish([Change(RUN, ChangeKind.EMBEDDING, STEP, LAYER)])
    assert server.app.state.audit.wait_idle(30)
    return server, coords, np.where(split == SPLIT_HELDOUT, -1, labels)


def test_dashboard_cluster_health_equals_what_the_map_detector_computes(stored_map):
    server, coords, counted = stored_map
    with httpx.Client(base_url=server.url, timeout=10) as http:
        rest = http.get(f"/api/runs/{RUN}/cluster-health", params={"layer": LAYER}).json()
        audit = http.get(f"/api/runs/{RUN}/audit").json()
    client = ApiClient(server.url)
    header, _ = client.embedding(RUN, LAYER, STEP)
    client.close()
    detector = audit["geometry"]["map_geometry"][LAYER][-1]
    assert detector["step"] == STEP
    pushed = header.health.model_dump()
    for key in ("intra", "inter"):
        assert rest[key] == [detector[key]] and pushed[key] == detector[key], key
    expected = class_geometry(coords, counted)
    assert rest["classes"] == pushed["classes"] == [0, 1, 2, 3, 4]
    assert pushed["spread"][:4] == [expected["class_spread"][c] for c in range(4)]
    assert len(rest["spread"]) == 1 and rest["spread"][0][:4] == pushed["spread"][:4]
    assert rest["spread"][0][4] is None  # REST sends non-finite values as null
    assert math.isnan(float(pushed["spread"][4]))  # a lone sample is not a class
    assert detector["intra"] < 5.0  # the far held-out samples were left out
