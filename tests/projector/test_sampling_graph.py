"""Density-guided sampling and the warm start of the spatial graph."""

from __future__ import annotations

import numpy as np
import pytest

from sentrycam.projector import sampling
from sentrycam.projector.graph import build_spatial_graph, warm_start_graph
from sentrycam.projector.temporal import PastSnapshot, linked_snapshots, temporal_edges


def test_tipping_fraction_is_the_smallest_with_a_gentle_secant_slope():
    curve = {0.1: 0.6, 0.2: 0.82, 0.5: 0.9, 1.0: 1.0}  # slopes 0.44, 0.225, 0.2
    assert sampling.tipping_fraction(curve) == 0.2
    steep = {0.1: 0.2, 0.5: 0.5, 0.9: 0.8}  # never gentle enough: the largest allowed
    assert sampling.tipping_fraction(steep) == 0.9
    assert sampling.tipping_fraction(curve, max_fraction=0.15) == 0.1


def test_thin_data_keeps_everything_and_high_dimensional_data_is_thinned():
    rng = np.random.default_rng(0)
    plane = rng.random((2000, 2))  # intrinsic dimension 2: density falls fast when thinned
    blob = rng.normal(size=(2000, 40))  # intrinsic dimension 40: barely changes
    plane_curve = sampling.relative_density_curve(plane, rng)
    blob_curve = sampling.relative_density_curve(blob, rng)
    assert plane_curve[0.5] < blob_curve[0.5] < 1.0
    assert sampling.tipping_fraction(plane_curve) == 1.0
    assert sampling.tipping_fraction(blob_curve) <= 0.2


def test_stratified_sample_keeps_small_classes_and_outliers():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(1000, 8))
    features[:5] += 30.0  # five far outliers
    labels = np.where(np.arange(1000) < 970, 0, 1)  # class 1 has 30 members
    ids = np.arange(1000) * 7 + 3
    rows = sampling.stratified_sample(ids, labels, 0.2, sampling.sparsity(features, rng), seed=0)
    assert set(range(5)) <= set(rows.tolist())
    assert np.sum(labels[rows] == 1) >= 20  # at least min_per_class of the small class
    assert abs(np.sum(labels[rows] == 0) - 0.2 * 970) <= 1
    # Same ids, same sample: the graph can be reused from one snapshot to the next.
    again = sampling.stratified_sample(ids, labels, 0.2, sampling.sparsity(features, rng), 0)
    assert len(np.intersect1d(rows, again)) >= 0.85 * len(rows)


def test_warm_start_translates_previous_neighbours_to_todays_rows():
    previous_ids = np.array([10, 11, 12, 13])
    previous_knn = np.array([[10, 11, 12], [11, 10, 13], [12, 13, 10], [13, 12, 11]])
    ids = np.array([13, 12, 11, 99])  # 10 is gone, 99 is new; rows reordered
    graph = warm_start_graph(ids, previous_ids, previous_knn, np.random.default_rng(0))
    assert graph.shape == (4, 3) and graph.dtype == np.int32
    assert graph[:, 0].tolist() == [0, 1, 2, 3]  # itself first
    assert graph[0, 1:].tolist() == [1, 2]  # 13 -> 12, 11
    assert graph[2, 2] == 0  # 11's old neighbour 13 is row 0 now
    assert ((graph >= 0) & (graph < 4)).all()


@pytest.mark.projector
def test_spatial_graph_links_neighbours_with_fuzzy_weights():
    rng = np.random.default_rng(2)
    features = np.concatenate([rng.normal(size=(60, 5)), rng.normal(size=(60, 5)) + 20.0])
    features = features.astype(np.float32)
    ids = np.arange(120) + 1000
    graph = build_spatial_graph(features, ids, 15, seed=0)
    assert ((graph.weights > 0) & (graph.weights <= 1)).all()
    same_cluster = (graph.heads < 60) == (graph.tails < 60)
    assert same_cluster.mean() > 0.99
    assert graph.knn_ids.shape == (120, 15) and np.isin(graph.knn_ids, ids).all()
    # exact_max=0: this sample takes NN-descent, warm-started from the previous graph
    again = build_spatial_graph(features, ids, 15, seed=0, previous=(ids, graph.knn_ids),
                                exact_max=0)
    assert again.reused and np.array_equal(np.sort(again.knn_ids, 1), np.sort(graph.knn_ids, 1))


def test_temporal_edges_anchor_each_id_at_its_earlier_position_with_clipped_margins():
    ids = np.array([5, 6, 7])
    features = np.array([[0.0, 0.0], [1.0, 0.0], [9.0, 9.0]], np.float32)
    past = [PastSnapshot(2, np.array([7, 5]), np.array([[9, 9], [0, 0.05]], np.float16),
                         np.array([[1, 1], [2, 2]], np.float32)),
            PastSnapshot(1, np.array([6]), np.array([[4.0, 0.0]], np.float16),
                         np.array([[3, 3]], np.float32))]
    assert [s.index for s in linked_snapshots(past, 3)] == [2, 1]  # t-1, t-2
    edges = temporal_edges(ids, features, past, local_scale=1.0)
    assert edges.current.tolist() == [2, 0, 1]
    np.testing.assert_allclose(edges.anchors, [[1, 1], [2, 2], [3, 3]])
    np.testing.assert_allclose(edges.margins, [0.1, 0.1, 1.0], atol=1e-3)  # 0, 0.05, 3 clipped
    assert edges.weights[0] > edges.weights[2]
