"""Calibration to a model taking off (a plateau left, a warm-up or one-cycle schedule reaching a
rate that learns): the gradient norm that grows while the loss falls fast is held at
developing, the same growth with the loss flat or rising is confirmed; a weight norm moving at
the resolution of its float32 value is not drift."""

from __future__ import annotations

import numpy as np

from sentrycam.backend.audit.baselines import LearningPace
from sentrycam.backend.audit.detectors.gradients import GradientExplosion, WeightDrift
from sentrycam.protocol.signals import WEIGHT_NORM
from tests.backend.audit.streams import layer_stats, levels, lognormal, max_level, scalars

STEPS, TAKEOFF = 240, 150


def _stream(loss_after: float) -> list:
    """A model at a plateau (loss 2.3) until TAKEOFF; then its gradient norm grows 5x while the
    loss moves to ``loss_after`` x its plateau level over 30 steps."""
    rng = np.random.default_rng(0)
    t = np.arange(STEPS)
    ramp = np.clip((t - TAKEOFF) / 30.0, 0.0, 1.0)
    loss = 2.3 * loss_after ** ramp * np.exp(rng.normal(scale=0.01, size=STEPS))
    grad = lognormal(STEPS, 0.3, seed=1, noise=0.2) * 5.0 ** ramp
    return scalars(STEPS, loss=loss, grad_norm=grad)


def test_gradients_growing_while_the_loss_falls_fast_are_learning_not_an_explosion():
    assert max_level(levels(GradientExplosion(), "scalars", _stream(0.5))) == 1


def test_the_same_growth_with_a_flat_loss_is_confirmed():
    assert max_level(levels(GradientExplosion(), "scalars", _stream(1.0))) >= 2


def test_learning_pace_counts_a_fall_beyond_the_trailing_spread_only():
    steady, takeoff = LearningPace(), LearningPace()
    rng = np.random.default_rng(3)
    for step in range(200):  # a steady decline with noise: never "fast"
        steady.update(2.0 * np.exp(-step / 150 + rng.normal(scale=0.1)))
        assert not steady.fast()
    for step in range(140):
        takeoff.update(2.3 if step < 120 else 2.3 * 0.97 ** (step - 119))
    assert takeoff.fast()


def test_a_weight_norm_moving_at_float32_resolution_is_not_drift():
    rng = np.random.default_rng(4)
    detector, norm, found = WeightDrift(), 10.0, {}
    for step in range(0, 400, 2):
        # 1e-6 per step in log norm, then a run of 20x faster steps: still 0.002% per step.
        rate = 2e-5 if 300 <= step < 340 else 1e-6 * rng.uniform(0.5, 1.5)
        norm *= np.exp(rate * 2)
        found.update(levels(detector, "layer_stats",
                            [layer_stats(step, WEIGHT_NORM.name, {"conv": float(norm)})]))
    assert max_level(found) == 0
