"""Quality metrics against brute-force references written out the slow, obvious way."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.manifold import trustworthiness as sklearn_trustworthiness

from sentrycam.projector import metrics


def _brute_neighbours(points: np.ndarray, i: int, k: int) -> set[int]:
    distances = [(float(np.sum((points[i] - points[j]) ** 2)), j)
                 for j in range(len(points)) if j != i]
    return {j for _, j in sorted(distances)[:k]}


@pytest.fixture
def pair():
    rng = np.random.default_rng(3)
    high = rng.normal(size=(60, 12))
    low = high[:, :2] + rng.normal(size=(60, 2)) * 0.5  # a noisy, partly faithful map
    return high, low


def test_neighbour_preservation_matches_brute_force(pair):
    high, low = pair
    expected = np.mean([len(_brute_neighbours(high, i, 7) & _brute_neighbours(low, i, 7)) / 7
                        for i in range(len(high))])
    assert metrics.neighbour_preservation(high, low, 7) == pytest.approx(expected)
    assert metrics.neighbour_preservation(high, high[:, :2], 7) < 1.0
    assert metrics.neighbour_preservation(high, high, 7) == pytest.approx(1.0)


def test_neighbour_preservation_on_query_rows(pair):
    high, low = pair
    rows = np.array([0, 5, 9])
    expected = np.mean([len(_brute_neighbours(high, i, 5) & _brute_neighbours(low, i, 5)) / 5
                        for i in rows])
    assert metrics.neighbour_preservation(high, low, 5, rows) == pytest.approx(expected)


def test_trustworthiness_matches_sklearn(pair):
    high, low = pair
    for k in (3, 10):
        assert metrics.trustworthiness(high, low, k) == pytest.approx(
            sklearn_trustworthiness(high, low, n_neighbors=k))
    assert metrics.trustworthiness(high, high, 5) == pytest.approx(1.0)


def test_temporal_ranking_matches_scipy_spearman():
    rng = np.random.default_rng(4)
    highs = [rng.normal(size=(20, 6)) for _ in range(5)]
    lows = [h[:, :2] + rng.normal(size=(20, 2)) * 0.3 for h in highs]
    expected = []
    for i in range(20):
        hd = [np.linalg.norm(highs[t][i] - highs[-1][i]) for t in range(4)]
        ld = [np.linalg.norm(lows[t][i] - lows[-1][i]) for t in range(4)]
        expected.append(spearmanr(hd, ld).statistic)
    assert metrics.temporal_ranking(highs, lows) == pytest.approx(np.mean(expected))
    # A map whose per-sample movement is the high-D movement, shrunk, ranks perfectly.
    shrunk = [0.1 * (h[:, :2] - highs[-1][:, :2]) for h in highs]
    same_distance = [np.stack([np.linalg.norm(h - highs[-1], axis=1), np.zeros(20)], 1)
                     for h in highs]
    assert metrics.temporal_ranking(highs, same_distance) == pytest.approx(1.0)
    assert metrics.temporal_ranking(highs, shrunk) < 1.0


def test_temporal_neighbour_preservation_matches_brute_force():
    rng = np.random.default_rng(5)
    highs = [rng.normal(size=(8, 5)) for _ in range(7)]
    lows = [rng.normal(size=(8, 2)) for _ in range(7)]
    shares = []
    for i in range(8):
        high_i = np.stack([h[i] for h in highs])
        low_i = np.stack([y[i] for y in lows])
        for t in range(7):
            shares.append(len(_brute_neighbours(high_i, t, 3) & _brute_neighbours(low_i, t, 3)) / 3)
    assert metrics.temporal_neighbour_preservation(highs, lows, 3) == pytest.approx(np.mean(shares))
    with pytest.raises(ValueError, match="at least 4 snapshots"):
        metrics.temporal_neighbour_preservation(highs[:3], lows[:3], 3)


def test_prediction_preserving_rate_counts_agreeing_rows():
    weights = np.array([[1.0, -1.0], [0.0, 2.0]])
    features = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.1], [0.1, 3.0]])
    decoded = np.array([[1.0, 0.1], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    head = lambda x: x @ weights  # noqa: E731 - a linear classifier head
    expected = np.mean([np.argmax(f @ weights) == np.argmax(d @ weights)
                        for f, d in zip(features, decoded)])
    assert metrics.prediction_preserving_rate(features, decoded, head) == expected == 0.5
    with pytest.raises(ValueError, match="same shape"):
        metrics.prediction_preserving_rate(features, decoded[:2], head)
