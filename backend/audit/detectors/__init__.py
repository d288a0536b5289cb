"""The audit detectors, in small families (one concern per module).

:func:`build_detectors` returns a fresh set for one run: every detector keeps per-run state.
"""

from __future__ import annotations

from sentrycam.backend.audit.detectors.attention import AttentionCollapse
from sentrycam.backend.audit.detectors.base import FAMILIES, Detector, MapView, ProbeView
from sentrycam.backend.audit.detectors.geometry import GeometryDetector, MapGeometryDetector
from sentrycam.backend.audit.detectors.gradients import (GradientExplosion, OptimizerState,
                                                         UpdateStall, VanishingGradients,
                                                         WeightDrift)
from sentrycam.backend.audit.detectors.local import (DeadUnits, GradientFlow, Saturation,
                                                     WeightNormImbalance)
from sentrycam.backend.audit.detectors.memorisation import RepeatedBatch, TrainProbeGap
from sentrycam.backend.audit.detectors.loss import (LossDivergence, NonFinite, Oscillation,
                                                    OutlierBatch, Stagnation)
from sentrycam.backend.audit.detectors.outputs import (ClassLossRise, ConfidenceCollapse,
                                                       EntropyDrift, FallingCorrectRate,
                                                       LossDistributionShift)
from sentrycam.backend.audit.detectors.overfitting import Overfitting, ValidationDivergence

DETECTOR_TYPES: tuple[type[Detector], ...] = (
    NonFinite, LossDivergence, OutlierBatch, Oscillation, Stagnation,
    GradientExplosion, VanishingGradients, UpdateStall, OptimizerState, WeightDrift,
    DeadUnits, Saturation, GradientFlow, WeightNormImbalance,
    ConfidenceCollapse, EntropyDrift, FallingCorrectRate, ClassLossRise,
    LossDistributionShift,
    Overfitting, ValidationDivergence, RepeatedBatch, TrainProbeGap,
    GeometryDetector, MapGeometryDetector, AttentionCollapse,
)


def build_detectors() -> list[Detector]:
    """One fresh instance of every detector (per-run state)."""
    return [cls() for cls in DETECTOR_TYPES]


def detector_families() -> dict[str, str]:
    """Alert detector name -> family of the detector class that raises it (``FAMILIES``)."""
    return {alert: cls.family for cls in DETECTOR_TYPES for alert in cls.alert_names()}


__all__ = ["Detector", "ProbeView", "MapView", "DETECTOR_TYPES", "FAMILIES", "build_detectors",
           "detector_families"]
