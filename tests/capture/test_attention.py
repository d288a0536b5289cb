"""Attention statistics of the probe pass: per head, exactly what the model's attention does.

The reference is computed by hand from each encoder layer's own ``in_proj`` weights (scores,
causal and padding masks, softmax), independently of the module's forward; the statistics
capture sends must equal it to 1e-5, at the weights of the snapshot's step even when its probe
pass is spread over later steps. Training stays bit-identical. A Hugging Face model running
eager attention gives the weights it returns (``output_attentions``' weights).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sentrycam import capture
from sentrycam.capture import attention
from sentrycam.capture.attention import AttentionRecorder, attention_stats
from sentrycam.capture.transport import MemoryTransport
from sentrycam.protocol.messages import LayerStats
from sentrycam.protocol.signals import ATTENTION_STATS

LENGTH, DIM, HEADS, LAYERS, CLASSES = 8, 16, 4, 2, 3


class Encoder(nn.Module):
    """[B, LENGTH, DIM] zero-padded sequences -> logits [B, CLASSES]: a causal two-layer
    encoder whose key padding mask marks the all-zero positions."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(DIM, HEADS, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.head = nn.Linear(DIM, CLASSES)

    @staticmethod
    def masks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        return causal, x.abs().sum(-1) == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        causal, padding = self.masks(x)
        hidden = self.encoder(x, mask=causal, src_key_padding_mask=padding)
        return self.head(hidden.mean(1))


def sequences(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 [n, LENGTH, DIM] with 4..LENGTH real positions then zeros; labels int64 [n]."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    x = torch.randn(n, LENGTH, DIM, generator=gen) + labels[:, None, None].float()
    lengths = torch.randint(4, LENGTH + 1, (n,), generator=gen)
    x[torch.arange(LENGTH)[None, :] >= lengths[:, None]] = 0.0
    return x, labels


def build(seed: int = 0) -> Encoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Encoder()


def hand_stats(weights: torch.Tensor) -> np.ndarray:
    """[H, len(ATTENTION_STATS)] of weights [B, H, L, S] over every row, in float64."""
    rows = weights.double().permute(0, 2, 1, 3).reshape(-1, weights.shape[1], weights.shape[3])
    heads = rows.shape[1]
    tv = 0.5 * (rows[:, :, None] - rows[:, None]).abs().sum(3)
    return torch.stack([-torch.special.xlogy(rows, rows).sum(2).mean(0), rows.amax(2).mean(0),
                        ((1 - tv).sum(2) - 1).mean(0) / (heads - 1)], 1).numpy()


def by_hand(model: Encoder, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Layer name -> [HEADS, len(ATTENTION_STATS)] from softmax(q k^T / sqrt(d) + masks)
    computed from the in_proj weights, layer after layer (float64)."""
    causal, padding = model.masks(x)
    hidden_keys = causal[None, None] | padding[:, None, None]  # [B, 1, L, S]
    bias = torch.where(hidden_keys, -math.inf, 0.0).double()
    hidden, found = x, {}
    with torch.no_grad():
        for i, layer in enumerate(model.encoder.layers):
            attn = layer.self_attn
            w_q, w_k, _ = attn.in_proj_weight.double().chunk(3)
            b_q, b_k, _ = attn.in_proj_bias.double().chunk(3)
            split = lambda t: t.view(len(x), LENGTH, HEADS, DIM // HEADS).transpose(1, 2)
            q = split(hidden.double() @ w_q.T + b_q)
            k = split(hidden.double() @ w_k.T + b_k)
            weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(DIM // HEADS) + bias, -1)
            found[f"encoder.layers.{i}.self_attn"] = hand_stats(weights)
            hidden = layer.train()(hidden, src_mask=causal, src_key_padding_mask=padding)
    return found


def as_layers(message: LayerStats) -> dict[str, np.ndarray]:
    """Module name -> [heads, stats] rows of an attention LayerStats message."""
    assert message.stats == ATTENTION_STATS
    modules: dict[str, list[np.ndarray]] = {}
    for layer, row in zip(message.layers, message.values):
        module, head = layer.rsplit(":head", 1)
        assert int(head) == len(modules.setdefault(module, []))
        modules[module].append(row)
    return {module: np.stack(rows) for module, rows in modules.items()}


def attention_messages(transport: MemoryTransport) -> list[LayerStats]:
    return [m for m in transport.of_kind("layer_stats") if m.stats == ATTENTION_STATS]


def test_a_snapshot_records_each_heads_attention_exactly():
    x, y = sequences(40, seed=1)
    model = build()
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), transport=transport, every=10_000,
                         overhead_budget=None)
    run.snapshot()
    run.detach()
    (message,) = attention_messages(transport)
    assert message.step == 0
    sent, expected = as_layers(message), by_hand(build(), x)
    assert sent.keys() == expected.keys()
    for module, values in expected.items():
        np.testing.assert_allclose(sent[module], values, atol=1e-5, rtol=0, err_msg=module)
    # the masks matter: the same stats without them would differ
    assert np.all(sent["encoder.layers.0.self_attn"][:, 0] < math.log(LENGTH) - 0.3)


def test_a_spread_snapshot_measures_the_weights_of_its_own_step(train):
    x, y = sequences(48, seed=2)
    model = build(seed=3)
    transport = MemoryTransport()
    # each snapshot's probe pass runs in slices over the next steps, while the weights move
    run = capture.attach(model, probe=(x, y), transport=transport, every=4,
                         overhead_budget=None)
    states = {}
    train(model, x, y, 9, optimizer=torch.optim.Adam(model.parameters(), lr=0.05), batch=16,
          each_step=lambda step: states.setdefault(
              step, {k: v.clone() for k, v in model.state_dict().items()}))
    run.detach()
    messages = attention_messages(transport)
    assert [m.step for m in messages] == [0, 4, 8]
    for message in messages:
        reference = build()
        reference.load_state_dict(states[message.step])
        for module, values in by_hand(reference, x).items():
            np.testing.assert_allclose(as_layers(message)[module], values, atol=1e-5, rtol=0)


def test_training_with_attention_statistics_is_bit_identical(train):
    x, y = sequences(64, seed=4)

    def trained(watched: bool) -> dict[str, torch.Tensor]:
        model = build(seed=5)
        run = (capture.attach(model, probe=(x, y), transport=MemoryTransport(), every=2,
                              overhead_budget=None, stats_every=1) if watched else None)
        train(model, x, y, 10, batch=16, seed=6)
        if run is not None:
            assert len(attention_messages(run._transport)) >= 4  # it really measured
            run.detach()
        return model.state_dict()

    plain, watched = trained(False), trained(True)
    for name, value in plain.items():
        assert torch.equal(value, watched[name]), name
    assert torch.backends.mha.get_fastpath_enabled()  # put back after every probe pass


@pytest.mark.parametrize("batch_first", [True, False])
def test_long_batches_are_measured_in_slices_with_their_own_masks(monkeypatch, batch_first):
    """Per-sample [B * H, L, S] masks, key padding and bias_k: slicing the batch to bound
    memory gives the statistics of the module's own weights for the whole batch."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        module = nn.MultiheadAttention(12, 3, add_bias_kv=True, batch_first=batch_first).eval()
    gen = torch.Generator().manual_seed(8)
    batch, length = 10, 5
    q = torch.randn(batch, length, 12, generator=gen)
    inputs = q if batch_first else q.transpose(0, 1)
    mask = torch.rand(batch * 3, length, length, generator=gen) < 0.3
    mask[..., 0] = False  # every query keeps a key
    padding = torch.zeros(batch, length, dtype=torch.bool)
    padding[::2, -2:] = True
    with torch.no_grad():
        _, weights = module(inputs, inputs, inputs, key_padding_mask=padding, attn_mask=mask,
                            average_attn_weights=False)
    whole = attention.HeadSums.zeros(3)
    whole.add(weights)
    monkeypatch.setattr(attention, "MAX_ELEMENTS", 1)  # one sample per slice
    totals: dict = {}
    with torch.no_grad(), AttentionRecorder(module).recording(totals):
        module(inputs, inputs, inputs, key_padding_mask=padding, need_weights=False,
               attn_mask=mask)
    sliced = attention_stats("r", 0, totals)
    assert sliced.layers == (":head0", ":head1", ":head2")
    np.testing.assert_allclose(sliced.values, whole.means(), atol=1e-6)


def test_models_without_attention_send_no_attention_statistics(make_model, data):
    model = make_model("mlp")
    x, y = data("mlp", n=64)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), transport=transport, overhead_budget=None)
    run.snapshot()
    run.detach()
    assert transport.of_kind("snapshot") and not attention_messages(transport)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_hugging_face_attention_is_read_from_its_eager_weights(monkeypatch, implementation):
    """An eager HF model returns its weights: they are the statistics; sdpa computes none."""
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(9)
        model = transformers.BertForSequenceClassification(transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            vocab_size=30, num_labels=CLASSES, attn_implementation=implementation))
    gen = torch.Generator().manual_seed(10)
    ids = torch.randint(0, 30, (24, 9), generator=gen)
    mask = (torch.arange(9)[None] < torch.randint(5, 10, (24, 1), generator=gen)).long()
    labels = torch.arange(24) % CLASSES
    transport = MemoryTransport()
    run = capture.attach(model, probe=({"input_ids": ids, "attention_mask": mask}, labels),
                         transport=transport)
    run.snapshot()
    run.detach()
    sent = attention_messages(transport)
    if implementation == "sdpa":
        assert not sent
        return
    model.eval()
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    layers = as_layers(sent[0])
    assert list(layers) == [f"bert.encoder.layer.{i}.attention.self" for i in range(2)]
    for values, weights in zip(layers.values(), reference):
        np.testing.assert_allclose(values, hand_stats(weights), atol=1e-5, rtol=0)
