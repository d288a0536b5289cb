"""Geometry detectors on constructed class clusters (high-D features and 2D maps); the metrics
themselves are tested in tests/backend/test_geometry.py."""

from __future__ import annotations

import numpy as np
import pytest

from sentrycam.backend.audit.detectors.base import MapView
from sentrycam.backend.audit.detectors.geometry import GeometryDetector, MapGeometryDetector
from tests.backend.audit.streams import first_confirmed, max_level, probe_view

CLASSES, PER_CLASS = 5, 60


def clusters(separation: float, dim: int, seed: int, collapse_class: int | None = None):
    """Gaussian classes at ``separation`` from the origin along their own axis; labels [N]."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLASSES), PER_CLASS)
    centres = np.zeros((CLASSES, dim))
    centres[np.arange(CLASSES), np.arange(CLASSES)] = separation
    if collapse_class is not None:
        centres[collapse_class] = centres[(collapse_class + 1) % CLASSES]
    points = centres[labels] + rng.normal(size=(len(labels), dim))
    return points.astype(np.float32), labels


def _runs(collapse_at: int | None, collapse_class: int | None = None, snapshots: int = 14):
    """Separation grows while the model learns; from ``collapse_at`` the classes mix again."""
    views = []
    for i in range(snapshots):
        separation = min(8.0, 2.0 + i)
        if collapse_at is not None and i >= collapse_at and collapse_class is None:
            separation = 1.5
        cc = collapse_class if collapse_at is not None and i >= collapse_at else None
        points, labels = clusters(separation, 16, seed=i, collapse_class=cc)
        views.append(probe_view(i * 25, labels, features={"body": points.astype(np.float16)}))
    return views


@pytest.mark.parametrize("detector_name", ["class_separation", "davies_bouldin",
                                           "knn_consistency", "class_drift"])
def test_geometry_fires_when_classes_mix_again(detector_name):
    def by_name(views):
        out = {}
        detector = GeometryDetector()
        for view in views:
            for f in detector.observe("snapshot", view):
                if f.detector == detector_name:
                    out[f.step] = max(out.get(f.step, 0), f.level)
        return out

    assert first_confirmed(by_name(_runs(collapse_at=10))) in (250, 275)
    assert max_level(by_name(_runs(collapse_at=None))) < 2


def test_class_collapse_names_the_class():
    detector = GeometryDetector()
    fired = [f for view in _runs(collapse_at=10, collapse_class=2)
             for f in detector.observe("snapshot", view)
             if f.detector == "class_collapse" and f.level >= 2]
    assert fired and fired[0].step in (250, 275)
    assert fired[0].evidence["label"] in (2, 3)  # 2 moved onto 3: either may be the worst


def test_effective_rank_collapse():
    detector = GeometryDetector()
    found = {}
    for i in range(14):
        points, labels = clusters(min(8.0, 2.0 + i), 16, seed=i)
        if i >= 10:  # every point squeezed onto two directions
            points = points[:, :2] @ np.ones((2, 16), np.float32) * np.array(
                [1, -1] * 8, np.float32)
        for f in detector.observe("snapshot", probe_view(i * 25, labels,
                                                         features={"body": points})):
            if f.detector == "effective_rank":
                found[f.step] = max(found.get(f.step, 0), f.level)
    assert first_confirmed(found) in (250, 275)


def test_geometry_needs_labels_and_map_geometry_waits_for_embeddings():
    detector = GeometryDetector()
    points, labels = clusters(5.0, 8, 0)
    assert detector.observe("snapshot", probe_view(0, np.full(len(labels), -1),
                                                   features={"body": points})) == []
    assert "labels" in detector.status()["reason"]
    map_detector = MapGeometryDetector()
    assert map_detector.status()["reason"].startswith("no embeddings yet")


def test_map_geometry_fires_on_the_2d_map():
    detector = MapGeometryDetector()
    found = {}
    for i in range(14):
        separation = min(8.0, 2.0 + i) if i < 10 else 1.0
        rng = np.random.default_rng(i)
        labels = np.repeat(np.arange(4), 50)
        angles = labels * np.pi / 2
        coords = np.stack([np.cos(angles), np.sin(angles)], 1) * separation + \
            rng.normal(size=(200, 2))
        for f in detector.observe("embedding", MapView(i * 25, "body", coords, labels)):
            if f.detector == "map_knn_consistency":
                found[f.step] = max(found.get(f.step, 0), f.level)
    assert first_confirmed(found) in (250, 275)
    assert detector.status()["active"]


def test_a_layer_collapsed_to_one_point_from_the_start_is_observed_without_error():
    # A deep MLP at PyTorch's default init maps every probe sample to the same vector: every
    # distance is 0, so every floor derived from the values is 0 too.
    detector = GeometryDetector()
    labels = np.repeat(np.arange(CLASSES), PER_CLASS)
    collapsed = np.zeros((len(labels), 16), np.float16)
    for i in range(8):
        findings = detector.observe("snapshot", probe_view(i * 25, labels,
                                                           features={"body": collapsed}))
        assert all(f.level < 2 for f in findings if f.detector == "class_collapse")


def _with_outputs(views, at_chance: bool):
    """The views with class outputs: confidence at chance (1/5) or well above it."""
    out = []
    for view in views:
        n = len(view.labels)
        confidence = np.full(n, 0.2 if at_chance else 0.9, np.float32)
        out.append(probe_view(view.step, view.labels, features=dict(view.features),
                              outputs={"confidence": confidence, "pred": view.labels.copy()}))
    return out


def test_geometry_waits_for_the_model_to_leave_chance_level():
    """A model still at chance has no learned structure to lose: the same mixing that is
    confirmed once it predicts is not alerted while its outputs sit at chance."""
    def confirmed(views):
        detector = GeometryDetector()
        return [f for view in views for f in detector.observe("snapshot", view)
                if f.level >= 2]

    assert confirmed(_with_outputs(_runs(collapse_at=10), at_chance=False))
    assert not confirmed(_with_outputs(_runs(collapse_at=10), at_chance=True))
