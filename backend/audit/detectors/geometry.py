"""Geometry detectors (SentryCam): per layer, on the high-D probe features of each snapshot and
on the 2D map of each embedding, alert when the class structure degrades from the best this
run's layer reached: separation ratio, Davies-Bouldin index, kNN label consistency, effective
rank, per-class collapse, and probe samples leaving their class.

The metric history per layer is kept for the audit status (the "cluster health trajectory":
intra-class variance against inter-class distance over time).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from sentrycam.backend.audit.alerts import Finding
from sentrycam.backend.audit.baselines import LearningPace, RobustWindow
from sentrycam.backend.audit.detectors.base import (GEOMETRY, Detector, MapView, ProbeView,
                                                    SeriesWatch, finding)
from sentrycam.backend.audit.detectors.outputs import SNAPSHOT_LEVELS as LEVELS
from sentrycam.backend.audit.detectors.outputs import has_left_chance, snapshot_watch
from sentrycam.backend.geometry import class_geometry, training_labels
from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.messages import Scalars
from sentrycam.protocol.signals import LOSS

#: Smallest noise scale of a ratio-like metric, relative to its best value (5%): snapshots of
#: a healthy run wander by a few percent.
RELATIVE_FLOOR = 0.05
#: Per-class separation takes the worst of all classes, so its floor is wider (10%).
CLASS_FLOOR = 0.10

#: The alert on the worst class's separation (per-class collapse).
CLASS_COLLAPSE = "class_collapse"
#: metric -> (alert name, higher is better, what it means, suggestion)
METRICS: dict[str, tuple[str, bool, str, str]] = {
    "ratio": ("class_separation", False, "intra-class spread relative to inter-class distance",
              "classes are mixing in this layer's representation: an instability or a data "
              "change is undoing what the layer learned"),
    "davies_bouldin": ("davies_bouldin", False, "Davies-Bouldin index",
                       "clusters are overlapping more than they did"),
    "knn_consistency": ("knn_consistency", True, "kNN label consistency",
                        "neighbourhoods no longer agree with labels: representations are "
                        "scrambling (instability, label noise, forgetting)"),
    "eff_rank": ("effective_rank", True, "effective rank",
                 "the representation is collapsing onto few directions"),
    "leaving": ("class_drift", False, "fraction of probe samples nearer another class's centroid",
                "probe samples are leaving their class clusters"),
}


def rank_watch() -> SeriesWatch:
    """Effective rank falls naturally while classes form (features concentrate on the class
    directions), so it is judged against its recent snapshots in log space, not its best: a
    sudden fall is a collapse, a steady decline is learning."""
    return SeriesWatch(RobustWindow(window=8, lag=0, min_count=3, floor=0.1), LEVELS,
                       direction=-1.0)


class LayerGeometry:
    """Watches of one layer's metrics, and their history."""

    def __init__(self) -> None:
        self.watches = {metric: snapshot_watch(higher)
                        for metric, (_, higher, _, _) in METRICS.items() if metric != "eff_rank"}
        self.watches["eff_rank"] = rank_watch()
        self.classes: dict[int, SeriesWatch] = {}
        self.history: list[dict[str, Any]] = []
        self.structured = False  # has this layer ever separated the classes?

    def note_structure(self, knn: float, labels: np.ndarray) -> None:
        """A layer has class structure once its kNN label consistency was at least halfway
        between chance (the agreement of random neighbours) and perfect. Layers that never got
        there (early convolutions, pooled inputs) have no structure to lose: their geometry is
        recorded but not alerted on."""
        _, counts = np.unique(labels[labels >= 0], return_counts=True)
        chance = float(((counts / counts.sum()) ** 2).sum()) if counts.size else 1.0
        self.structured = self.structured or knn >= (1.0 + chance) / 2.0


class GeometryDetector(Detector):
    """Geometry of the high-D features of each captured layer at every snapshot."""

    name = "geometry"
    kinds = frozenset({ChangeKind.SNAPSHOT, ChangeKind.SCALARS})  # scalars: the loss's pace
    waiting_for = "no snapshot with features yet"
    family = GEOMETRY
    prefix = ""
    #: Metrics this detector does not alert on (effective rank means nothing in 2D).
    skipped: frozenset[str] = frozenset()

    @classmethod
    def alert_names(cls) -> frozenset[str]:
        names = {alert for alert, _, _, _ in METRICS.values()} | {CLASS_COLLAPSE}
        return frozenset(cls.prefix + name for name in names) - cls.skipped

    def __init__(self) -> None:
        super().__init__()
        self.layers: dict[str, LayerGeometry] = {}
        #: Has the model left chance level (``has_left_chance``)? Until then a layer's class
        #: structure is that of its input or its initialisation, not something learned that
        #: could be lost: it is recorded, not judged (a run that never learns, e.g. a CNN
        #: that SGD keeps at chance, scrambles its initial structure without failing).
        self.learning_since: int | None = None
        self.judges_chance = False  # have snapshots with class outputs been seen?
        #: An effective rank that falls while the loss falls fast is a model taking off
        #: (features concentrating on the class directions), held at developing.
        self.pace = LearningPace()

    def note_learning(self, view: ProbeView) -> None:
        if {"confidence", "pred"} <= set(view.outputs):
            self.judges_chance = True
            if self.learning_since is None and has_left_chance(view):
                self.learning_since = view.step

    def learning_at(self, step: int) -> bool:
        """Had the model left chance by ``step`` (causal: a map can arrive after later
        snapshots)? Without class outputs (a model whose output is not [N, classes], or no
        snapshot seen) there is no way to tell, and the geometry is judged from the start."""
        if not self.judges_chance:
            return True
        return self.learning_since is not None and self.learning_since <= step

    def observe(self, kind: str, item: ProbeView | Scalars) -> list[Finding]:
        if kind == ChangeKind.SCALARS:
            self.pace.update(item.values.get(LOSS.name))
            return []
        self.note_learning(item)
        if not item.features:
            return []
        if not item.has_labels:
            self.inactive_reason = "no probe labels (pass labels with the probe)"
            return []
        labels = training_labels(item.labels, item.heldout)
        found: list[Finding] = []
        for layer, features in item.features.items():
            found.extend(self.judge_points(item.step, layer, np.asarray(features), labels))
        return found

    def judge_points(self, step: int, layer: str, points: np.ndarray,
                     labels: np.ndarray) -> list[Finding]:
        metrics = class_geometry(points, labels)
        if metrics is None:
            return []
        self.seen()
        state = self.layers.setdefault(layer, LayerGeometry())
        state.history.append({"step": step, **{k: v for k, v in metrics.items()
                                               if not isinstance(v, dict)}})
        del state.history[:-200]
        if not self.learning_at(step):
            self.inactive_reason = "waiting for the model to leave chance level"
            return []
        was_structured = state.structured
        state.note_structure(metrics["knn_consistency"], labels)
        found = [self._metric(step, layer, metric, metrics, state) for metric in METRICS]
        found.append(self._classes(step, layer, metrics["class_separation"], state))
        if not was_structured:  # calibrating: watches learn, nothing is alerted
            found = [replace(f, level=0) for f in found]
        return found

    def _metric(self, step: int, layer: str, metric: str, metrics: dict[str, Any],
                state: LayerGeometry) -> Finding:
        alert_name, higher, meaning, suggestion = METRICS[metric]
        value, watch = float(metrics[metric]), state.watches[metric]
        if metric == "eff_rank":
            return self._rank(step, layer, value, watch, meaning, suggestion)
        if metric in ("knn_consistency", "leaving"):
            p = value if 0 < value < 1 else 0.5
            # A fraction of n points: its binomial standard error.
            n = metrics["n_pairwise" if metric == "knn_consistency" else "n"]
            floor = math.sqrt(p * (1 - p) / n)
        else:
            best = watch.baseline.best
            floor = RELATIVE_FLOOR * abs(best if math.isfinite(best) else value)
        watch.baseline.floor = max(floor, 1e-9)
        level, score = watch.observe(step, value)
        where = "2D map" if self.prefix else "features"
        return finding(
            self.prefix + alert_name, step, level, score, layer=layer,
            evidence=watch.evidence(series=f"{meaning} ({where})", layer=layer,
                                    inter=round(metrics["inter"], 6),
                                    intra=round(metrics["intra"], 6)),
            message=f"{meaning} of {layer} ({where}) degraded to {value:.4g}, {score or 0:.1f} "
                    f"noise units worse than its best ({watch.baseline.best:.4g})",
            suggestion=suggestion, confidence=0.5)

    def _rank(self, step: int, layer: str, value: float, watch: SeriesWatch, meaning: str,
              suggestion: str) -> Finding:
        level, score = watch.observe(step, math.log(max(value, 1e-9)))
        if 1 < level < 3 and self.pace.fast():
            level = 1
        center, _ = watch.baseline.center_scale()
        where = "2D map" if self.prefix else "features"
        return finding(
            self.prefix + "effective_rank", step, level, score, layer=layer,
            evidence=watch.evidence(series=f"log {meaning} ({where})", layer=layer),
            message=f"{meaning} of {layer} fell to {value:.3g} from about "
                    f"{math.exp(center) if math.isfinite(center) else float('nan'):.3g} "
                    f"({score or 0:.1f} robust scales)",
            suggestion=suggestion, confidence=0.5)

    def _classes(self, step: int, layer: str, separation: dict[int, float],
                 state: LayerGeometry) -> Finding:
        worst: tuple[float, int, int] | None = None
        for label, value in separation.items():
            watch = state.classes.setdefault(label, snapshot_watch(True))
            best = watch.baseline.best
            watch.baseline.floor = CLASS_FLOOR * abs(best if math.isfinite(best) else value)
            level, score = watch.observe(step, value)
            if score is not None and (worst is None or (level, score) > worst[:2]):
                worst = (level, score, label)
        if worst is None:
            return finding(self.prefix + CLASS_COLLAPSE, step, 0, None, layer=layer)
        level, score, label = worst
        watch = state.classes[label]
        return finding(
            self.prefix + CLASS_COLLAPSE, step, level, score, layer=layer,
            evidence=watch.evidence(series=f"separation of class {label}", layer=layer,
                                    label=label),
            message=f"class {label} is collapsing into its neighbours in {layer}: its "
                    f"separation fell {score:.1f} noise units below its best",
            suggestion=f"class {label} is being forgotten or confused (a task switch, label "
                       "noise concentrated on it, or imbalance in recent batches)",
            confidence=0.5)

    def trajectory(self) -> dict[str, list[dict[str, Any]]]:
        """Metric history per layer (the cluster health trajectory)."""
        return {layer: list(state.history) for layer, state in self.layers.items()}


class MapGeometryDetector(GeometryDetector):
    """The same geometry on the projector's 2D map of each layer (active once embeddings
    arrive). Effective rank is meaningless in 2D and is left out."""

    name = "map_geometry"
    kinds = frozenset({ChangeKind.EMBEDDING, ChangeKind.SNAPSHOT})  # snapshots: has it learned
    waiting_for = "no embeddings yet (the projector has not drawn a map of this run)"
    prefix = "map_"
    skipped = frozenset({"map_effective_rank"})

    def observe(self, kind: str, item: MapView | ProbeView) -> list[Finding]:
        if kind == ChangeKind.SNAPSHOT:
            self.note_learning(item)
            return []
        if not (item.labels >= 0).any():
            self.inactive_reason = "no probe labels (pass labels with the probe)"
            return []
        found = self.judge_points(item.step, item.layer, np.asarray(item.coords), item.labels)
        return [f for f in found if f.detector not in self.skipped]
