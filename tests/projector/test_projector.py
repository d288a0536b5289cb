"""The Projector estimator: shapes, order, reproducibility, persistence, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sentrycam.projector import Projector, metrics
from tests.projector.maps import FAST, nearest_centroid_accuracy

pytestmark = pytest.mark.projector



def test_ten_updates_give_finite_maps_in_input_order(snapshots):
    # exact_knn_max=0: later snapshots take NN-descent warm-started from the previous graph
    projector = Projector(seed=0, exact_knn_max=0, **FAST)
    rng = np.random.default_rng(1)
    for features, labels in snapshots:
        order = rng.permutation(len(features))  # rows arrive in any order
        coords = projector.update(features[order], order, labels[order])
        assert coords.shape == (len(features), 2) and coords.dtype == np.float32
        assert np.isfinite(coords).all()
        # Row r of the output belongs to input row r: it sits with its own class.
        assert nearest_centroid_accuracy(coords, labels[order]) > 0.95
    assert projector.n_updates == 10
    assert projector.last_info["linked"] == [5, 7, 8]  # t-4, t-2, t-1
    assert projector.last_info["graph_reused"]


def test_without_polish_the_map_is_the_networks_map(snapshots):
    projector = Projector(seed=0, polish_epochs=0, first_polish_epochs=0,
                          initial_layout_epochs=0, **FAST)
    for features, labels in snapshots[:2]:
        coords = projector.update(features, np.arange(len(features)), labels)
        np.testing.assert_allclose(projector.transform(features), coords, atol=1e-5)


def test_polish_sharpens_neighbourhoods_without_moving_the_map(snapshots):
    plain = Projector(seed=0, polish_epochs=0, first_polish_epochs=0, **FAST)
    polished = Projector(seed=0, **FAST)
    for features, labels in snapshots[:3]:
        ids = np.arange(len(features))
        before, after = plain.update(features, ids, labels), polished.update(features, ids, labels)
    assert (metrics.neighbour_preservation(features, after, 15)
            > metrics.neighbour_preservation(features, before, 15) + 0.02)
    moved = np.linalg.norm(polished.transform(features) - after, axis=1)
    assert np.median(moved) < 0.2 * np.ptp(after, axis=0).max()


def test_map_keeps_clusters_apart_and_is_faithful(snapshots):
    projector = Projector(seed=0, **FAST)
    for features, labels in snapshots[:3]:
        coords = projector.update(features, np.arange(len(features)), labels)
    centroid = np.stack([coords[labels == c].mean(0) for c in range(4)])
    spread = max(np.linalg.norm(coords[labels == c] - centroid[c], axis=1).mean()
                 for c in range(4))
    gaps = [np.linalg.norm(centroid[a] - centroid[b]) for a in range(4) for b in range(a)]
    assert min(gaps) > 2 * spread
    assert metrics.trustworthiness(features, coords, 10) > 0.9


def test_fixed_seed_reproduces_on_cpu(snapshots):
    def run(seed):
        projector = Projector(seed=seed, **FAST)
        return [projector.update(f, np.arange(len(f)), y) for f, y in snapshots[:3]]
    first, second, other = run(0), run(0), run(1)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[-1], other[-1])


def test_global_torch_rng_is_untouched(snapshots):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Projector(seed=0, **FAST).update(snapshots[0][0], np.arange(len(snapshots[0][0])))
    assert torch.equal(torch.rand(3), expected)


def test_ids_may_appear_and_disappear(snapshots):
    projector = Projector(seed=0, **FAST)
    (first, _), (second, _) = snapshots[:2]
    projector.update(first[:200], np.arange(200))
    ids = np.arange(40, 240)  # 40 ids gone, 40 new ones
    coords = projector.update(second[40:240], ids)
    assert coords.shape == (200, 2) and np.isfinite(coords).all()
    assert projector.last_info["n_temporal"] == 160  # only ids seen before link back


def test_state_dict_round_trip_continues_identically(snapshots):
    original = Projector(seed=0, **FAST)
    for features, labels in snapshots[:2]:
        original.update(features, np.arange(len(features)), labels)
    restored = Projector.from_bytes(original.to_bytes())
    features, labels = snapshots[2]
    np.testing.assert_array_equal(restored.transform(features), original.transform(features))
    np.testing.assert_array_equal(restored.update(features, np.arange(len(features)), labels),
                                  original.update(features, np.arange(len(features)), labels))
    assert restored.n_updates == 3 and len(restored.history) == 3


def test_inverse_decodes_back_near_the_features(snapshots):
    projector = Projector(seed=0, **FAST)
    features, labels = snapshots[0]
    coords = projector.update(features, np.arange(len(features)), labels)
    decoded = projector.inverse(coords)
    assert decoded.shape == features.shape and decoded.dtype == np.float32
    # Decoded points land nearer their own cluster centre than any other cluster's.
    centres = np.stack([features[labels == c].mean(0) for c in range(4)])
    nearest = np.argmin(((decoded[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == labels) > 0.9


def test_without_a_time_limit_every_snapshot_trains_its_whole_step_budget(snapshots):
    projector = Projector(seed=0, **FAST)
    for features, labels in snapshots[:2]:
        projector.update(features, np.arange(len(features)), labels)
    assert [info["steps"] for info in projector.history] == [FAST["first_steps"], FAST["steps"]]
    assert [info["initial_layout"] for info in projector.history] == [True, False]


def test_a_time_limit_cuts_training_short(snapshots):
    projector = Projector(seed=0, **{**FAST, "first_time_limit_s": 0.0})
    features, labels = snapshots[0]
    coords = projector.update(features, np.arange(len(features)), labels)
    fitted = projector.wait_for_fit()  # a first snapshot is fitted in the background
    assert projector.last_info["steps"] == 1 and np.isfinite(coords).all()
    assert np.isfinite(fitted).all()


def test_sampling_fraction_is_recorded_per_snapshot(snapshots):
    projector = Projector(seed=0, sample_above=100, **FAST)
    for features, labels in snapshots[:2]:
        projector.update(features, np.arange(len(features)), labels)
    for info in projector.history:
        assert 0 < info["fraction"] <= 1
        assert info["n_sampled"] == round(info["fraction"] * info["n"])
        assert info["density_curve"]


@pytest.fixture(scope="module")
def one_update(snapshots) -> bytes:
    """The state of a projector after one update with the first snapshot (each test that
    uses it restores its own copy, so the update runs once per module)."""
    projector = Projector(seed=0, **FAST)
    features, _ = snapshots[0]
    projector.update(features, np.arange(len(features)))
    return projector.to_bytes()


@pytest.mark.parametrize("mutate, message", [
    (lambda f, i: (f, i[:-1]), "one id per feature row"),
    (lambda f, i: (f, np.r_[i[:-1], i[0]]), "duplicate"),
    (lambda f, i: (np.where(np.arange(len(f))[:, None] == 3, np.nan, f), i), "NaN or Inf"),
    (lambda f, i: (np.where(np.arange(len(f))[:, None] == 3, np.inf, f), i), "NaN or Inf"),
    (lambda f, i: (f[:10], i[:10]), "at least k=15 points"),
    (lambda f, i: (f[:, :8], i), "dimension changed from 16 to 8"),
    (lambda f, i: (f, i.astype(float)), "integers"),
    (lambda f, i: (f[0], i), "2-D array"),
])
def test_bad_input_raises_clear_value_error(snapshots, one_update, mutate, message):
    projector = Projector.from_bytes(one_update)
    features, _ = snapshots[0]
    bad_features, bad_ids = mutate(features, np.arange(len(features)))
    with pytest.raises(ValueError, match=message):
        projector.update(bad_features, bad_ids)
    assert projector.n_updates == 1  # a refused snapshot changes nothing


def test_transform_and_inverse_before_any_update_explain_themselves():
    projector = Projector(seed=0)
    with pytest.raises(ValueError, match="call update"):
        projector.transform(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="call update"):
        projector.inverse(np.zeros((3, 2)))
