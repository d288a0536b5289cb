"""Probes of keyword-input models: mapping batches, Datasets of mapping items, attention-mask
pooling over real tokens only, and the default layers of a Hugging Face encoder classifier."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from sentrycam import capture
from sentrycam.capture.layers import pool_features
from sentrycam.capture.transport import MemoryTransport
from sentrycam.protocol.messages import Snapshot

VOCAB, WIDTH, CLASSES, LENGTH = 20, 8, 3, 6


class TokenClassifier(nn.Module):
    """forward(input_ids [N, T], attention_mask [N, T]) -> logits [N, CLASSES]."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.mix = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, input_ids, attention_mask):
        tokens = torch.tanh(self.mix(self.embed(input_ids)))  # [N, T, WIDTH]
        weights = attention_mask[:, :, None].float()
        return self.head((tokens * weights).sum(1) / weights.sum(1))


class DictItems(Dataset):
    """Items as Hugging Face datasets give them: lists of ints and an int label."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> None:
        self.ids, self.mask, self.labels = ids, mask, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i].tolist(), "attention_mask": self.mask[i].tolist(),
                "label": int(self.labels[i])}


def token_data(n: int = 24, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, LENGTH), generator=gen)
    lengths = torch.randint(2, LENGTH + 1, (n,), generator=gen)
    mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
    return ids * mask, mask, torch.arange(n) % CLASSES


def snapshot_of(model: nn.Module, probe, **kwargs) -> Snapshot:
    transport = MemoryTransport()
    run = capture.attach(model, probe=probe, transport=transport, layers=["mix", "head:input"],
                         **kwargs)
    run.snapshot()
    run.detach()
    return next(m for m in transport.messages if isinstance(m, Snapshot))


def test_a_mapping_probe_a_collated_batch_and_a_dataset_of_dict_items_agree():
    torch.manual_seed(0)
    model = TokenClassifier()
    ids, mask, labels = token_data()
    as_tuple = snapshot_of(model, ({"input_ids": ids, "attention_mask": mask}, labels))
    collated = snapshot_of(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    items = snapshot_of(model, DictItems(ids, mask, labels))
    for other in (collated, items):
        np.testing.assert_array_equal(other.sample_ids, as_tuple.sample_ids)
        for name in ("mix", "head:input"):
            np.testing.assert_array_equal(other.features[name], as_tuple.features[name])
        np.testing.assert_array_equal(other.outputs["pred"], as_tuple.outputs["pred"])
    assert len(as_tuple.sample_ids) == len(labels)
    assert np.isfinite(as_tuple.outputs["loss"]).all()  # the labels were read


def test_token_features_pool_over_real_tokens_only():
    torch.manual_seed(0)
    model = TokenClassifier()
    ids, mask, labels = token_data()
    padded_ids = torch.cat([ids, torch.zeros_like(ids)], dim=1)  # twice as much padding
    padded_mask = torch.cat([mask, torch.zeros_like(mask)], dim=1)
    short = snapshot_of(model, ({"input_ids": ids, "attention_mask": mask}, labels))
    long = snapshot_of(model, ({"input_ids": padded_ids, "attention_mask": padded_mask}, labels))
    np.testing.assert_allclose(long.features["mix"].astype(np.float32),
                               short.features["mix"].astype(np.float32), atol=1e-3)


def test_pool_features_masked_mean_and_first_token():
    x = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert pool_features(x, "tokens", "mean", mask).tolist() == [[1.0, 2.0], [6.0, 7.0]]
    assert pool_features(x, "tokens", "cls", mask).tolist() == [[0.0, 1.0], [6.0, 7.0]]
    assert pool_features(x, "tokens", "mean").tolist() == [[2.0, 3.0], [8.0, 9.0]]


def test_dict_items_of_different_lengths_are_refused_with_the_fix():
    ids, mask, labels = token_data()

    class Ragged(DictItems):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            return {**item, "input_ids": item["input_ids"][: 2 + i % 3]}

    with pytest.raises(ValueError, match=r"different shapes.*pad"):
        capture.attach(TokenClassifier(), probe=Ragged(ids, mask, labels),
                       transport=MemoryTransport())


def test_a_mapping_probe_the_model_rejects_names_its_tensors():
    ids, mask, labels = token_data()
    with pytest.raises(ValueError, match=r"rejected probe inputs of input_ids \(2, 6\) int64"):
        capture.attach(TokenClassifier(), probe=({"input_ids": ids, "bogus": mask}, labels),
                       transport=MemoryTransport())


def test_hugging_face_encoder_classifier_default_layers(monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=VOCAB, num_labels=CLASSES)
    model = transformers.BertForSequenceClassification(config)
    ids, mask, labels = token_data()
    transport = MemoryTransport()
    run = capture.attach(model, probe=({"input_ids": ids, "attention_mask": mask}, labels),
                         transport=transport)
    assert run.layers == ["bert.encoder.layer.1", "bert.encoder.layer.2",
                          "bert.encoder.layer.3", "classifier:input"]
    run.snapshot()
    run.detach()
    snap = next(m for m in transport.messages if isinstance(m, Snapshot))
    assert {name: f.shape for name, f in snap.features.items()} == {
        name: (len(labels), 32) for name in run.layers}


class TwoInputs(nn.Module):
    """forward(a [N, 4], b [N, 2]) -> logits [N, CLASSES]."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, WIDTH), nn.Linear(2, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, a, b):
        return self.head(torch.relu(self.a(a) + self.b(b)))


class PairItems(Dataset):
    def __init__(self, a, b, labels) -> None:
        self.a, self.b, self.labels = a, b, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return (self.a[i], self.b[i]), int(self.labels[i])


def test_several_positional_inputs_as_a_tuple_or_a_dataset_of_pairs():
    torch.manual_seed(0)
    model = TwoInputs()
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(20, 4, generator=gen), torch.randn(20, 2, generator=gen)
    labels = torch.arange(20) % CLASSES
    transport = MemoryTransport()
    run = capture.attach(model, probe=((a, b), labels), transport=transport, layers=["head:input"])
    run.snapshot()
    run.detach()
    snap = next(m for m in transport.messages if isinstance(m, Snapshot))
    with torch.no_grad():
        expected = torch.relu(model.a(a) + model.b(b))
    np.testing.assert_allclose(snap.features["head:input"].astype(np.float32), expected.numpy(),
                               atol=1e-2, rtol=1e-3)
    transport = MemoryTransport()
    run = capture.attach(model, probe=PairItems(a, b, labels), transport=transport,
                         layers=["head:input"])
    run.snapshot()
    run.detach()
    again = next(m for m in transport.messages if isinstance(m, Snapshot))
    np.testing.assert_array_equal(again.features["head:input"], snap.features["head:input"])
    np.testing.assert_array_equal(again.outputs["pred"], snap.outputs["pred"])
