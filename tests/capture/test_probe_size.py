"""The probe size at the minimum cadence: when the budget cannot pay for the whole probe, maps
cover a class-stratified part of it (never fewer than MIN_MAP_SAMPLES), the run says so, and
training is unchanged.

The model's probe forward is made expensive on purpose (a layer that sleeps in eval mode, in
proportion to the batch): the budget then cannot afford the whole probe on any machine, so the
outcome does not depend on how fast this one is."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import torch
from torch import nn

from sentrycam import capture
from sentrycam.capture.budget import MIN_MAP_SAMPLES
from sentrycam.capture.transport import MemoryTransport

PROBE = 1000
STEPS = 150
#: Sleep per sample of an eval-mode forward: the whole probe costs 0.2 s a snapshot.
EVAL_SECONDS_PER_SAMPLE = 2e-4


class SlowInEval(nn.Module):
    """Identity; in eval mode it first sleeps in proportion to the batch size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            time.sleep(EVAL_SECONDS_PER_SAMPLE * x.shape[0])
        return x


def slow_probe_mlp(seed: int = 0) -> nn.Module:
    """[B, 16] -> logits [B, 4]."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), SlowInEval(), nn.Linear(32, 4))


def watched_run(data, train, budget):
    model = slow_probe_mlp()
    x, y = data("mlp", n=PROBE)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), every=10, overhead_budget=budget,
                         transport=transport)
    train(model, x, y, STEPS)
    run.detach()
    return model, y, transport


def test_maps_cover_a_stratified_part_of_the_probe_when_the_budget_cannot_pay_for_all(
        data, train):
    _, y, transport = watched_run(data, train, budget=0.01)
    snapshots = transport.of_kind("snapshot")
    # the minimum cadence holds: every 10 steps early on, at most a quarter of the run apart
    steps = [s.step for s in snapshots]
    assert steps[:5] == [0, 10, 20, 30, 40] and len(steps) >= 8, steps
    sizes = [len(s.sample_ids) for s in snapshots]
    assert all(MIN_MAP_SAMPLES <= n < PROBE for n in sizes), sizes
    labels = y.numpy()
    shares = Counter(labels.tolist())
    for snapshot in snapshots:
        n = len(snapshot.sample_ids)
        counts = Counter(labels[snapshot.sample_ids].tolist())
        for label, total in shares.items():  # class proportions kept, to a sample
            assert abs(counts[label] - n * total / PROBE) <= 1.5, (n, counts, shares)
        assert all(len(f) == n for f in snapshot.features.values())
        assert all(len(v) == n for v in snapshot.outputs.values())
    # a smaller map shows a subset of a larger one's samples: the same points stay on the map
    ordered = sorted(snapshots, key=lambda s: len(s.sample_ids))
    for smaller, larger in zip(ordered, ordered[1:]):
        assert set(smaller.sample_ids) <= set(larger.sample_ids)
    (notice,) = [e for e in transport.of_kind("event") if e.event == "probe_reduced"]
    assert f"of the {PROBE} probe samples" in notice.message
    assert "overhead_budget" in notice.message


def test_without_a_budget_every_map_covers_the_whole_probe(data, train):
    _, _, transport = watched_run(data, train, budget=None)
    snapshots = transport.of_kind("snapshot")
    assert [s.step for s in snapshots][:3] == [0, 10, 20]
    assert all(sorted(s.sample_ids) == list(range(PROBE)) for s in snapshots)
    assert not [e for e in transport.of_kind("event") if e.event == "probe_reduced"]


def test_training_is_bit_identical_with_reduced_maps(data, train):
    watched, _, transport = watched_run(data, train, budget=0.01)
    assert any(len(s.sample_ids) < PROBE for s in transport.of_kind("snapshot"))
    plain = slow_probe_mlp()
    x, y = data("mlp", n=PROBE)
    train(plain, x, y, STEPS)
    for (name, a), b in zip(watched.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name
    assert np.isfinite(transport.of_kind("snapshot")[-1].features["3:input"].astype(
        np.float32)).all()
