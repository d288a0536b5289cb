"""The projector's own UMAP pieces: fuzzy memberships, the 2D similarity curve, the layout SGD.

They replace umap-learn's in the projector (a fresh process then need not import it), so they
are checked against UMAP's definitions and, in the slow test, against umap-learn itself."""

from __future__ import annotations

import numpy as np
import pytest

from sentrycam.projector import metrics
from sentrycam.projector.fuzzy import bandwidths, curve_params, fuzzy_union
from sentrycam.projector.graph import exact_neighbors
from sentrycam.projector.initial import INITIAL_EXTENT
from tests.projector.maps import nearest_centroid_accuracy


def _clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four well-separated Gaussian clusters: features float32 [400, 10], labels int [400]."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), 100)
    centres = rng.normal(size=(4, 10)) * 6.0
    return (centres[labels] + rng.normal(size=(400, 10))).astype(np.float32), labels


def test_curve_matches_umaps_published_parameters():
    # UMAP's defaults (min_dist 0.1, spread 1): a = 1.577, b = 0.895.
    a, b = curve_params(0.1, 1.0)
    assert a == pytest.approx(1.5769, abs=1e-3) and b == pytest.approx(0.8951, abs=1e-3)
    # A larger min_dist keeps points further apart: a flatter curve near 0.
    wide_a, wide_b = curve_params(0.5, 1.0)
    assert wide_a < a and wide_b > b


def test_memberships_are_symmetric_and_calibrated():
    features, _ = _clusters()
    features[1] = features[0]  # a duplicate neighbour (distance 0) must not break the search
    indices, dists = exact_neighbors(features, 15)
    rho, sigma = bandwidths(dists)
    excess = np.maximum(dists[:, 1:] - rho[:, None], 0)
    # Each point's memberships to its 14 neighbours sum to log2(15), as UMAP calibrates them.
    np.testing.assert_allclose(np.exp(-excess / sigma[:, None]).sum(1), np.log2(15), rtol=1e-3)
    heads, tails, weights = fuzzy_union(indices, dists)
    assert (heads != tails).all() and ((weights > 0) & (weights <= 1)).all()
    forward = dict(zip(zip(heads.tolist(), tails.tolist()), weights.tolist()))
    assert all(forward[(t, h)] == w for (h, t), w in forward.items())
    # Every point's nearest other point is a full member of its neighbourhood.
    nearest = {(i, j) for i, j in enumerate(indices[:, 1].tolist())}
    assert all(forward[edge] == pytest.approx(1.0) for edge in nearest)


@pytest.mark.projector  # numba
def test_layout_is_seeded_and_draws_the_clusters_apart():
    from sentrycam.projector.layout import optimise_layout

    features, labels = _clusters()
    indices, dists = exact_neighbors(features, 15)
    heads, tails, weights = fuzzy_union(indices, dists)
    start = np.random.default_rng(1).uniform(-INITIAL_EXTENT, INITIAL_EXTENT, size=(400, 2))
    curve = curve_params(0.1)
    first, again, other = (optimise_layout(start, heads, tails, weights, 100, curve, seed, 1.0)
                           for seed in (0, 0, 1))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other) and first.dtype == np.float32
    assert nearest_centroid_accuracy(start.astype(np.float32), labels) < 0.6
    assert nearest_centroid_accuracy(first, labels) == 1.0
    # Within a cluster the neighbours are 10-D noise: umap-learn's own layout of this graph
    # keeps ~0.4 of them (a random map 15/400); the clusters themselves are exact above.
    assert metrics.neighbour_preservation(features, first, 15) > 0.3


@pytest.mark.projector
def test_memberships_equal_umap_learns():
    from umap.umap_ import fuzzy_simplicial_set

    features, _ = _clusters(seed=2)
    indices, dists = exact_neighbors(features, 15)
    heads, tails, weights = fuzzy_union(indices, dists)
    graph, _, _ = fuzzy_simplicial_set(features, 15, np.random.RandomState(0), "euclidean",
                                       knn_indices=indices, knn_dists=dists)
    graph = graph.tocoo()
    theirs = {(h, t): w for h, t, w in zip(graph.row.tolist(), graph.col.tolist(),
                                           graph.data.tolist()) if w > 0}
    ours = dict(zip(zip(heads.tolist(), tails.tolist()), weights.tolist()))
    assert ours.keys() == theirs.keys()
    assert max(abs(ours[edge] - theirs[edge]) for edge in ours) < 1e-4
