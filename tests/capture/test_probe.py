"""The probe set: sources, stable ids, class stratification, held-out split, RNG hygiene."""

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from sentrycam import capture
from sentrycam.protocol.messages import SPLIT_HELDOUT, SPLIT_TRAIN
from sentrycam.capture.probe import build_probe, stratified_choice
from sentrycam.capture.transport import MemoryTransport


class AugmentedDataset(Dataset):
    """Map-style dataset whose items draw from the global RNGs, like random augmentations."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        jitter = torch.rand(()) * 0 + random.random() * 0 + np.random.rand() * 0
        return self.x[i] + jitter, int(self.y[i])


def global_rng_states():
    return (torch.get_rng_state().clone(), random.getstate(), np.random.get_state()[1].copy())


def same_rng_states(a, b):
    return torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])


def attach_probe(model, probe, **kwargs):
    transport = MemoryTransport()
    run = capture.attach(model, probe=probe, transport=transport, **kwargs)
    run.snapshot()
    run.detach()
    return run, transport.of_kind("probe")[0], transport.of_kind("snapshot")[0]


def test_tuple_probe_keeps_ids_labels_and_every_sample(make_model, data):
    x, y = data("mlp", n=50)
    run, probe, snapshot = attach_probe(make_model("mlp"), (x, y))
    assert run.probe_size == 50
    assert probe.sample_ids.tolist() == list(range(50))
    assert probe.labels.tolist() == y.tolist()
    assert probe.split.tolist() == [SPLIT_TRAIN] * 50
    assert (snapshot.sample_ids == probe.sample_ids).all()
    assert probe.sample_ids.dtype == np.int64 and probe.split.dtype == np.uint8


def test_dataset_and_shuffling_dataloader_give_the_same_probe_without_touching_global_rngs(
        make_model, data):
    x, y = data("mlp", n=300)
    model = make_model("mlp")
    from_tuple = attach_probe(model, (x, y), probe_size=60)[1]
    states = global_rng_states()
    from_dataset = attach_probe(model, AugmentedDataset(x, y), probe_size=60)[1]
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    from_loader = attach_probe(model, loader, probe_size=60)[1]
    assert same_rng_states(states, global_rng_states())
    for probe in (from_dataset, from_loader):
        assert probe.sample_ids.tolist() == from_tuple.sample_ids.tolist()
        assert probe.labels.tolist() == from_tuple.labels.tolist()


def test_stratification_keeps_every_class_even_a_rare_one():
    labels = np.array([0] * 600 + [1] * 300 + [2] * 97 + [3] * 3)
    chosen = stratified_choice(labels, 100, np.random.default_rng(0))
    counts = np.bincount(labels[chosen], minlength=4)
    assert len(chosen) == 100 and len(set(chosen.tolist())) == 100
    assert counts.min() >= 1  # the class of 3 samples survives
    assert abs(counts[0] - 60) <= 2 and abs(counts[1] - 30) <= 2


def test_selection_is_seeded_and_capped(make_model):
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(500) % 4
    first = build_probe((x, y), None, 40, seed=3, pin=False)
    again = build_probe((x, y), None, 40, seed=3, pin=False)
    other = build_probe((x, y), None, 40, seed=4, pin=False)
    assert len(first) == 40 and np.bincount(first.labels).tolist() == [10, 10, 10, 10]
    assert first.sample_ids.tolist() == again.sample_ids.tolist()
    assert first.sample_ids.tolist() != other.sample_ids.tolist()
    assert torch.equal(first.inputs, x[torch.from_numpy(first.sample_ids)])


def test_heldout_ids_follow_the_train_ids_and_are_marked(make_model, data):
    x, y = data("mlp", n=30)
    hx, hy = data("mlp", n=10, seed=5)
    run, probe, snapshot = attach_probe(make_model("mlp"), (x, y), heldout=(hx, hy))
    assert run.probe_size == 40
    assert probe.sample_ids.tolist() == list(range(40))  # held-out ids start at len(train) = 30
    assert probe.split.tolist() == [SPLIT_TRAIN] * 30 + [SPLIT_HELDOUT] * 10
    assert probe.labels[30:].tolist() == hy.tolist()
    assert snapshot.features["fc1"].shape == (40, 32)


def test_heldout_gets_its_share_when_the_budget_is_tight():
    x, y = torch.randn(400, 3), torch.arange(400) % 4
    probe = build_probe((x, y), (x[:100], y[:100]), 80, seed=0, pin=False)
    assert (probe.split == SPLIT_HELDOUT).sum() == 20 and len(probe) == 80
    assert probe.sample_ids[probe.split == SPLIT_HELDOUT].min() >= 400


def test_unlabelled_probe_has_unknown_labels_and_nan_losses(make_model, data):
    x, _ = data("mlp", n=20)
    _, probe, snapshot = attach_probe(make_model("mlp"), (x.numpy(), None))
    assert probe.labels.tolist() == [-1] * 20
    assert np.isnan(snapshot.outputs["loss"]).all()
    assert np.isfinite(snapshot.outputs["confidence"]).all()
