"""The repeated-batch and memorisation detectors on constructed, seeded streams: each fires
soon after its failure begins and stays below severity 2 on a healthy run of the same shape."""

from __future__ import annotations

import numpy as np

from sentrycam.backend.audit.detectors.memorisation import RepeatedBatch, TrainProbeGap
from tests.backend.audit.streams import (first_confirmed, healthy_loss, levels, max_level,
                                         probe_view, scalars)

STEPS = 400
AT = 250
EVERY = 25


def repeated_from(loss: np.ndarray, at: int) -> np.ndarray:
    """The loss from ``at`` on as one repeated batch gives it: a smooth fall, no batch noise."""
    out = loss.copy()
    out[at:] = loss[at] * 0.97 ** np.arange(1, len(loss) - at + 1)
    return out


def test_repeated_batch_confirms_a_loss_that_falls_without_batch_noise():
    loss = repeated_from(healthy_loss(STEPS), AT)
    first = first_confirmed(levels(RepeatedBatch(), "scalars", scalars(STEPS, loss=loss)))
    assert first is not None and AT <= first < AT + 20


def test_repeated_batch_quiet_on_noisy_batches_and_on_full_batch_training():
    for seed in range(3):
        noisy = levels(RepeatedBatch(), "scalars", scalars(STEPS, loss=healthy_loss(STEPS, seed)))
        assert max_level(noisy) < 2
    full_batch = 0.1 + 2.2 * np.exp(-np.arange(STEPS) / 80)  # monotone from the first step
    assert max_level(levels(RepeatedBatch(), "scalars", scalars(STEPS, loss=full_batch))) == 0


def stream(batch_loss: np.ndarray, probe_loss: np.ndarray, seed: int) -> list[tuple[str, object]]:
    """Scalars every step and, every EVERY steps, a probe snapshot whose 200 training-split
    samples have per-sample losses around ``probe_loss`` at that step (100 held-out ones too)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(300) % 4
    heldout = np.arange(300) >= 200
    items: list[tuple[str, object]] = []
    for item in scalars(len(batch_loss), loss=batch_loss):
        items.append(("scalars", item))
        if item.step % EVERY == 0:
            losses = probe_loss[item.step] * rng.exponential(size=300)
            items.append(("snapshot", probe_view(item.step, labels, {"loss": losses},
                                                 heldout=heldout)))
    return items


def gap_levels(items: list[tuple[str, object]]) -> dict[int, int]:
    detector, out = TrainProbeGap(), {}
    for kind, item in items:
        for f in detector.observe(kind, item):
            out[f.step] = max(out.get(f.step, 0), f.level)
    return out


def test_memorisation_confirms_batches_far_below_the_probe_training_loss():
    probe = healthy_loss(STEPS, seed=5, noise=0.0)
    batch = healthy_loss(STEPS, seed=6)
    batch[AT:] /= np.minimum(1.25 ** np.arange(1, STEPS - AT + 1), 20.0)  # a subset memorised
    first = first_confirmed(gap_levels(stream(batch, probe, seed=1)))
    assert first is not None and AT <= first <= AT + 2 * EVERY


def test_memorisation_quiet_while_the_batches_stand_for_the_data():
    for seed in range(3):
        probe = healthy_loss(STEPS, seed=seed + 10, noise=0.0)
        batch = healthy_loss(STEPS, seed=seed)
        assert max_level(gap_levels(stream(batch, probe, seed))) < 2
