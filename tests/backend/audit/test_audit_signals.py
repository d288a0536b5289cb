"""Training-signal detectors on constructed series: each must fire on its failure and stay
below severity 2 on a healthy series of the same kind."""

from __future__ import annotations

import math

import numpy as np

from sentrycam.backend.audit.detectors.gradients import (GradientExplosion, OptimizerState,
                                                         UpdateStall, VanishingGradients,
                                                         WeightDrift)
from sentrycam.backend.audit.detectors.loss import (LossDivergence, NonFinite, Oscillation,
                                                    OutlierBatch, Stagnation)
from sentrycam.backend.audit.detectors.overfitting import Overfitting, ValidationDivergence
from tests.backend.audit.streams import (first_confirmed, healthy_loss, layer_stats, levels,
                                         lognormal, max_level, scalars)

STEPS = 400
AT = 250


def test_loss_divergence_fires_when_the_loss_climbs_back_up():
    loss = healthy_loss(STEPS)
    loss[AT:] *= 1.03 ** np.arange(STEPS - AT)
    first = first_confirmed(levels(LossDivergence(), "scalars", scalars(STEPS, loss=loss)))
    assert first is not None and AT <= first < AT + 60


def test_loss_divergence_quiet_on_a_noisy_converging_loss():
    for seed in range(3):
        found = levels(LossDivergence(), "scalars", scalars(STEPS, loss=healthy_loss(STEPS, seed)))
        assert max_level(found) < 2


def test_outlier_batch_confirms_repeated_spikes_only():
    loss = healthy_loss(STEPS)
    single = loss.copy()
    single[AT] *= 20
    assert max_level(levels(OutlierBatch(), "scalars", scalars(STEPS, loss=single))) == 1
    few, many = loss.copy(), loss.copy()
    few[[AT, AT + 20, AT + 40]] *= 20  # three heavy batches: still "developing"
    assert max_level(levels(OutlierBatch(), "scalars", scalars(STEPS, loss=few))) == 1
    many[AT:AT + 100:20] *= 20
    assert first_confirmed(levels(OutlierBatch(), "scalars",
                                  scalars(STEPS, loss=many))) == AT + 80


def test_oscillation_fires_on_bouncing_loss_and_not_on_noise():
    loss = healthy_loss(STEPS)
    bouncing = loss.copy()
    bouncing[AT:] = 0.5 * np.where(np.arange(STEPS - AT) % 2 == 0, 3.0, 1 / 3.0)
    assert first_confirmed(levels(Oscillation(), "scalars", scalars(STEPS, loss=bouncing)))
    assert max_level(levels(Oscillation(), "scalars", scalars(STEPS, loss=loss))) < 2


def test_stagnation_is_a_developing_signal_on_a_flat_loss_only():
    flat = lognormal(STEPS, 2.3, seed=1, noise=0.05)
    found = levels(Stagnation(), "scalars", scalars(STEPS, loss=flat))
    assert max_level(found) == 1  # capped: a plateau is also what convergence looks like
    assert max_level(levels(Stagnation(), "scalars", scalars(STEPS, loss=healthy_loss(STEPS)))) == 0


def test_nonfinite_is_critical_at_once():
    loss = healthy_loss(50)
    loss[30] = math.nan
    found = levels(NonFinite(), "scalars", scalars(50, loss=loss))
    assert first_confirmed(found) == 30 and found[30] == 3
    assert max_level(levels(NonFinite(), "scalars", scalars(50, loss=healthy_loss(50)))) == 0
    stats = [layer_stats(10, "nonfinite", {"fc": 0.0}), layer_stats(20, "nonfinite", {"fc": 4.0})]
    assert levels(NonFinite(), "layer_stats", stats, layer="fc") == {20: 3}


def test_gradient_explosion_sudden_and_slow_drift():
    grad = lognormal(STEPS, 1.0, seed=2) * np.linspace(1.0, 0.6, STEPS)
    jump = grad.copy()
    jump[AT:] *= 20
    first = first_confirmed(levels(GradientExplosion(), "scalars", scalars(STEPS, grad_norm=jump)))
    assert first is not None and AT <= first <= AT + 3
    drift = grad.copy()
    drift[AT:] *= 1.02 ** np.arange(STEPS - AT)  # 2.7x after 50 steps: no single big jump
    found = levels(GradientExplosion(), "scalars", scalars(STEPS, grad_norm=drift))
    developing = [step for step, level in found.items() if level >= 1]
    # A slow climb alone is reported as developing, never confirmed (healthy runs climb too).
    assert developing and min(developing) > AT and max_level(found) == 1
    assert max_level(levels(GradientExplosion(), "scalars", scalars(STEPS, grad_norm=grad))) == 0


def test_vanishing_gradients():
    grad = lognormal(STEPS, 1.0, seed=3) * np.linspace(1.0, 0.3, STEPS)
    collapsed = grad.copy()
    collapsed[AT:] *= 1e-4
    first = first_confirmed(levels(VanishingGradients(), "scalars",
                                   scalars(STEPS, grad_norm=collapsed)))
    assert first is not None and AT <= first <= AT + 3
    assert max_level(levels(VanishingGradients(), "scalars", scalars(STEPS, grad_norm=grad))) < 2


def test_vanishing_gradients_sees_clipping_that_throttles_the_gradient():
    grad = lognormal(STEPS, 1.0, seed=3)
    clipped = np.full(STEPS, np.nan)
    clipped[AT:] = 1e-3  # clip_grad_norm_(..., 1e-3): the optimizer gets a thousandth
    first = first_confirmed(levels(VanishingGradients(), "scalars",
                                   scalars(STEPS, grad_norm=grad, grad_norm_clipped=clipped)))
    assert first is not None and AT <= first <= AT + 3
    # Routine clipping from the start (to about half the norm) is this run's normal.
    routine = grad * 0.5
    assert max_level(levels(VanishingGradients(), "scalars",
                            scalars(STEPS, grad_norm=grad, grad_norm_clipped=routine))) < 2


def test_update_stall_fires_when_the_weights_stop_moving_not_on_a_schedule():
    ratio = lognormal(STEPS, 1e-3, seed=7, noise=0.1)
    warm_cosine = np.array([min(1.0, 0.05 + t / 40) * (0.05 + 0.475 * (1 + math.cos(
        math.pi * t / STEPS))) for t in range(STEPS)])
    step_decay = 0.3 ** (np.arange(STEPS) // (STEPS // 3))
    for schedule in (warm_cosine, step_decay):
        assert max_level(levels(UpdateStall(), "scalars",
                                scalars(STEPS, update_ratio=ratio * schedule))) < 2
    stalled = ratio * warm_cosine
    stalled[AT:] *= 1e-3  # the learning rate (or clipping) far too small
    first = first_confirmed(levels(UpdateStall(), "scalars",
                                   scalars(STEPS, update_ratio=stalled)))
    assert first is not None and AT <= first <= AT + 3


def test_optimizer_state_fires_when_updates_stop_following_lr_and_gradients():
    grad = lognormal(STEPS, 1.0, seed=4)
    lr = np.full(STEPS, 1e-3)
    ratio = lognormal(STEPS, 1e-3, seed=5, noise=0.1)
    corrupt = ratio.copy()
    corrupt[AT:] *= 50
    first = first_confirmed(levels(OptimizerState(), "scalars",
                                   scalars(STEPS, grad_norm=grad, lr=lr, update_ratio=corrupt)))
    assert first is not None and AT <= first <= AT + 3
    # The same jump explained by a learning-rate change is not corruption.
    lr_up = lr.copy()
    lr_up[AT:] *= 50
    assert max_level(levels(OptimizerState(), "scalars",
                            scalars(STEPS, grad_norm=grad, lr=lr_up, update_ratio=corrupt))) < 2


def test_weight_drift_fires_when_a_layer_grows_much_faster():
    rng = np.random.default_rng(6)
    norms = 10.0 * (1 + 0.002 * np.sqrt(np.arange(STEPS))) * np.exp(rng.normal(0, 1e-5, STEPS))
    fast = norms.copy()
    fast[AT:] *= 1.01 ** np.arange(STEPS - AT)
    stream = lambda n: [layer_stats(t, "weight_norm", {"fc": n[t]}) for t in range(STEPS)]
    first = first_confirmed(levels(WeightDrift(), "layer_stats", stream(fast), layer="fc"))
    assert first is not None and AT <= first < AT + 20
    assert max_level(levels(WeightDrift(), "layer_stats", stream(norms), layer="fc")) < 2


def test_weight_drift_quiet_when_healthy_growth_speeds_up_smoothly():
    # As in the demo CNN: the norm's growth rate rises 20x over 60 steps at a constant
    # learning rate (updates aligning), then settles; no step jumps from the one before.
    rng = np.random.default_rng(7)
    rate = 5e-5 * np.exp(np.clip(np.arange(STEPS) - 180, 0, 60) * np.log(20) / 60)
    rate *= np.exp(rng.normal(0, 0.1, STEPS))
    norms = 9.0 * np.exp(np.cumsum(rate))
    stream = [layer_stats(t, "weight_norm", {"fc": norms[t]}) for t in range(STEPS)]
    assert max_level(levels(WeightDrift(), "layer_stats", stream, layer="fc")) < 2


def _epochs(train: np.ndarray, val: np.ndarray, every: int = 20) -> list:
    n = len(train)
    val_series = np.full(n, np.nan)
    val_series[every - 1::every] = val[: len(val_series[every - 1::every])]
    return scalars(n, loss=train, val_loss=val_series)


def test_overfitting_from_the_validation_gap():
    epochs = 20
    train = healthy_loss(epochs * 20, noise=0.05)
    val_good = 0.3 + 2.0 * np.exp(-np.arange(epochs) / 3) + \
        np.random.default_rng(7).normal(0, 0.01, epochs)
    val_bad = val_good.copy()
    val_bad[10:] += 0.08 * np.arange(epochs - 10)
    found = levels(Overfitting(), "scalars", _epochs(train, val_bad))
    first = first_confirmed(found)
    assert first is not None and first >= 10 * 20
    assert max_level(levels(Overfitting(), "scalars", _epochs(train, val_good))) < 2


def test_overfitting_ignores_a_converged_model_wandering_near_zero_loss():
    # The healthy demo at 2,000 steps (99.9% held-out accuracy): the validation loss moves
    # between 0.002 and 0.01, several times its best, while the training loss keeps falling.
    epochs = 40
    train = healthy_loss(epochs * 20, noise=0.05) * 0.01
    val = np.r_[np.linspace(0.3, 0.002, 15), 0.002 + 0.0015 * np.arange(1, 6),
                np.full(20, 0.004)]
    assert max_level(levels(Overfitting(), "scalars", _epochs(train, val))) < 2
    # The same shape 0.1 nats up is a rise that matters.
    assert first_confirmed(levels(Overfitting(), "scalars", _epochs(train, val * 10))) \
        is not None


def test_overfitting_is_one_episode_until_the_heldout_loss_comes_back():
    # The healthy demo at 2,000 steps, seed 1: the validation loss creeps above its best,
    # falls back part of the way (still above it), creeps up again: one overfitting, not two.
    epochs = 48
    train = healthy_loss(epochs * 20, noise=0.05) * 0.01
    wander = 0.025 + 0.0004 * np.random.default_rng(3).standard_normal(10)
    plateau = [0.03, 0.034, 0.038, 0.042, 0.029, 0.028, 0.03, 0.029, 0.028, 0.029, 0.034, 0.038,
               0.042]  # the dip lasts longer than the 5 quiet observations that close an alert
    val = np.r_[np.linspace(0.3, 0.026, 15), wander, plateau, np.full(10, 0.025)]
    found = levels(Overfitting(), "scalars", _epochs(train, val))
    confirmed, back = first_confirmed(found), 19 + 20 * (25 + len(plateau))
    assert confirmed is not None and confirmed < back
    assert min(level for step, level in found.items() if confirmed <= step < back) >= 1
    assert max(level for step, level in found.items() if step >= back) == 0


def test_overfitting_says_why_it_is_inactive():
    detector = Overfitting()
    levels(detector, "scalars", scalars(30, loss=healthy_loss(30)))
    status = detector.status()
    assert not status["active"] and "val_loss" in status["reason"]


#: The healthy demo CNN's validation loss, 300 steps, seed 0 (one point per 22 steps): batch
#: norm's running statistics lag Adam and the held-out loss jumps 13x, then 143x, its best
#: (0.0094) while the training batches' loss stays under 0.05; it recovers by itself.
DEMO_WOBBLE = np.array([1.785, 0.1999, 0.064, 0.0882, 0.0274, 0.0126, 0.0169, 0.0094, 0.0114,
                        0.1242, 1.351, 0.0721, 0.0373])


def test_validation_divergence_confirms_a_jump_to_ten_times_the_best():
    train = healthy_loss(len(DEMO_WOBBLE) * 20, noise=0.05) * 0.01
    found = levels(ValidationDivergence(), "scalars", _epochs(train, DEMO_WOBBLE))
    assert first_confirmed(found) == 10 * 20 - 1  # the 0.124 point, 13x the best
    assert max_level(found) == 3  # 143x: critical
    assert max(level for step, level in found.items() if step > 11 * 20) == 0  # recovered


def test_validation_divergence_quiet_on_a_fall_and_a_converged_wander():
    train = healthy_loss(40 * 20, noise=0.05) * 0.01
    val = np.r_[np.linspace(2.3, 0.002, 15), 0.002 + 0.0015 * np.arange(1, 6),
                np.full(20, 0.004)]  # 5x its best near zero: under 0.1 nats above it
    assert max_level(levels(ValidationDivergence(), "scalars", _epochs(train, val))) == 0
    val[-1] = np.inf  # a validation pass that overflowed
    assert max_level(levels(ValidationDivergence(), "scalars", _epochs(train, val))) == 3
