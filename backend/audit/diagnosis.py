"""Diagnosis of an incident: which cause its alerts point to, how sure, and what to try.

Every cause is one :class:`Cause` in :data:`CAUSES`: its evidence weights (detector -> how much
that detector's alert speaks for the cause) and its suggestion. Adding a cause is adding one
entry; nothing else in the engine changes. A detector absent from every cause (a new one) still
counts towards the total evidence, so unexplained evidence lowers the confidence instead of
being ignored.

Scoring (:func:`diagnose`): each detector of the incident counts once, with its highest
severity and the rank of its first firing in the incident (what fired first weighs most: a
learning-rate blow-up shows in the gradients before the representations scatter). A detector's
contribution to a cause is ``weight * SEVERITY_WEIGHT[severity] * ORDER_DECAY ** rank``; a cause's
share of all contributions is its score. The leading cause is the diagnosis when its share is at
least :data:`MIN_SHARE` and :data:`LEAD_RATIO` times the runner-up's; otherwise the diagnosis is
``unknown`` (abstain), with the leaders listed as runners-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

UNKNOWN = "unknown"

#: How much one alert's highest severity (1 developing, 2 confirmed, 3 critical) counts.
SEVERITY_WEIGHT = {1: 0.5, 2: 1.0, 3: 1.5}
#: Each later firing rank in an incident counts this much of the rank before it.
ORDER_DECAY = 0.7
#: Weight of a detector no cause names (unexplained evidence dilutes every cause).
UNEXPLAINED_WEIGHT = 1.0
#: The leading cause's share of the evidence must reach this, ...
MIN_SHARE = 0.4
#: ... and be this many times the runner-up's share, or the diagnosis abstains.
LEAD_RATIO = 1.5
#: Runners-up reported with a diagnosis.
RUNNERS_UP = 3
#: Map-based detectors share the feature-based ones' weights (``map_davies_bouldin``).
MAP_PREFIX = "map_"


@dataclass(frozen=True)
class Cause:
    """One cause: ``weights`` detector name -> evidence weight (0..), ``suggestion``."""

    name: str
    weights: Mapping[str, float]
    suggestion: str


CAUSES: tuple[Cause, ...] = (
    Cause("instability", {
        "loss_divergence": 3.0, "nonfinite": 3.0, "gradient_explosion": 3.0, "oscillation": 2.5,
        "weight_drift": 2.0, "outlier_batch": 1.5, "weight_norm_imbalance": 1.0,
        "confidence_collapse": 1.0, "class_separation": 0.5, "knn_consistency": 0.5,
        "davies_bouldin": 0.5},
        "the step is too large for this phase of training: lower the learning rate (or add "
        "warm-up), clip gradients, and check for a schedule that jumps"),
    Cause("stalled", {
        "stagnation": 2.0, "vanishing_gradients": 4.0, "update_stall": 4.0, "gradient_flow": 2.0,
        "saturation": 2.0},
        "learning has stopped: check the learning rate and gradient clipping are not far too "
        "small, and look for saturated activations or a blocked gradient path"),
    Cause("collapse", {
        "dead_units": 4.0, "effective_rank": 3.0, "class_collapse": 1.5,
        "class_separation": 1.5, "davies_bouldin": 1.5, "knn_consistency": 1.0,
        "class_drift": 1.0, "saturation": 1.0, "confidence_collapse": 0.5,
        "entropy_drift": 0.5, "attention_collapse": 4.0},
        "the representation is collapsing (dead units, few directions, classes merging): "
        "lower the learning rate, use a leaky activation or normalisation, check "
        "initialisation"),
    Cause("overfitting", {"overfitting": 3.0},
        "the model is memorising the training set: add data or augmentation, regularise "
        "(weight decay, dropout), or stop at the best validation checkpoint"),
    Cause("forgetting", {
        "falling_correct_rate": 3.0, "class_collapse": 1.5, "class_drift": 1.0,
        "loss_distribution_shift": 1.0},
        "what was learned is being lost after a change of data: mix earlier data back in "
        "(replay), lower the learning rate, or regularise towards the earlier weights"),
    Cause("data", {
        "loss_distribution_shift": 1.5, "entropy_drift": 2.0, "outlier_batch": 1.5,
        "falling_correct_rate": 0.5, "confidence_collapse": 1.0, "knn_consistency": 0.5},
        "the data changed: look for label noise or corruption, an input distribution shift, "
        "or a loader that stalls or repeats batches"),
    Cause("optimizer", {"optimizer_state": 5.0, "weight_drift": 0.5},
        "the optimizer's state no longer matches the gradients (corrupted or reloaded moment "
        "buffers): reset the optimizer state or restore it from a checkpoint"),
)

#: Every diagnosis an incident may carry.
DIAGNOSES: tuple[str, ...] = tuple(cause.name for cause in CAUSES) + (UNKNOWN,)
#: Suggestion per diagnosis (``unknown``: what to look at).
SUGGESTIONS: dict[str, str] = {cause.name: cause.suggestion for cause in CAUSES} | {
    UNKNOWN: "the evidence does not single out one cause: compare the curves and the "
             "alerts' evidence around the incident's first step"}


@dataclass(frozen=True)
class Evidence:
    """One detector's part in an incident: its first step and highest severity (1-3)."""

    detector: str
    first_step: int
    severity: int


@dataclass(frozen=True)
class Diagnosis:
    """``diagnosis`` in :data:`DIAGNOSES`; ``confidence`` the leading cause's share in [0, 1];
    ``runners_up`` (cause, share) after the diagnosis, best first."""

    diagnosis: str
    confidence: float
    runners_up: tuple[tuple[str, float], ...]
    suggestion: str


def base_detector(name: str) -> str:
    """The detector name the cause weights use (``map_davies_bouldin`` -> ``davies_bouldin``)."""
    return name[len(MAP_PREFIX):] if name.startswith(MAP_PREFIX) else name


def cause_of(detector: str) -> str | None:
    """The cause a detector speaks for most strongly (None: no cause names it). Alerts of
    detectors with the same cause are causally linked (see :mod:`.incidents`)."""
    name = base_detector(detector)
    best = max(CAUSES, key=lambda cause: cause.weights.get(name, 0.0))
    return best.name if best.weights.get(name, 0.0) > 0 else None


def scores(evidence: Sequence[Evidence]) -> dict[str, float]:
    """Each cause's share of the incident's evidence (shares sum to <= 1)."""
    ranks = {step: rank for rank, step in enumerate(sorted({e.first_step for e in evidence}))}
    totals = {cause.name: 0.0 for cause in CAUSES}
    unexplained = 0.0
    for item in evidence:
        strength = SEVERITY_WEIGHT.get(min(max(item.severity, 1), 3), 1.0) \
            * ORDER_DECAY ** ranks[item.first_step]
        name = base_detector(item.detector)
        weights = [(cause.name, cause.weights[name]) for cause in CAUSES if name in cause.weights]
        if not weights:
            unexplained += UNEXPLAINED_WEIGHT * strength
        for cause, weight in weights:
            totals[cause] += weight * strength
    whole = sum(totals.values()) + unexplained
    return {cause: (total / whole if whole > 0 else 0.0) for cause, total in totals.items()}


def diagnose(evidence: Sequence[Evidence]) -> Diagnosis:
    """The diagnosis of an incident's evidence (abstains with ``unknown``; see the module)."""
    ranked = sorted(scores(evidence).items(), key=lambda item: -item[1])
    (lead, share), (_, second) = ranked[0], ranked[1]
    clear = share >= MIN_SHARE and share >= LEAD_RATIO * second
    diagnosis = lead if clear else UNKNOWN
    others = ranked[1:] if clear else ranked
    runners = tuple((cause, round(value, 3)) for cause, value in others[:RUNNERS_UP]
                    if value > 0)
    return Diagnosis(diagnosis, round(share, 3), runners, SUGGESTIONS[diagnosis])
