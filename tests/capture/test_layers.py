"""Which layers are captured, and how each is pooled to one vector per sample."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from sentrycam import capture
from sentrycam.capture.layers import PROJECTED_DIM, pool_features
from sentrycam.capture.transport import MemoryTransport


def snapshot_at_attach(model, x, y=None, **kwargs):
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), transport=transport, **kwargs)
    run.snapshot()  # before any training step
    run.detach()
    return run, transport.of_kind("snapshot")[0], transport.of_kind("run_start")[0].config


@pytest.mark.parametrize("kind, expected", [
    ("mlp", ["fc1", "fc2", "fc3:input"]),
    # conv layers directly followed by BatchNorm are captured after the norm
    ("cnn", ["features.1", "features.4", "features.8", "fc:input"]),
    # a residual block is captured at its branch output before the addition (bn2); the
    # downsample shortcut is never a candidate
    ("resnet", ["layer1.bn2", "layer2.bn2", "layer3.bn2", "fc:input"]),
])
def test_default_layers(make_model, data, kind, expected):
    model = make_model(kind)
    x, y = data(kind, n=20)
    run, snapshot, _ = snapshot_at_attach(model, x, y)
    assert run.layers == expected
    assert list(snapshot.features) == expected


def test_residual_capture_is_the_branch_before_the_skip_addition(make_model, data):
    model = make_model("resnet")
    x, y = data("resnet", n=20)
    seen = {}
    handles = [model.layer1.bn2.register_forward_hook(lambda m, a, out: seen.update(branch=out)),
               model.layer1.register_forward_hook(lambda m, a, out: seen.update(block=out))]
    model.eval()
    with torch.no_grad():
        model(x)
    model.train()
    for handle in handles:
        handle.remove()
    _, snapshot, _ = snapshot_at_attach(model, x, y)
    captured = torch.from_numpy(snapshot.features["layer1.bn2"].astype("float32"))
    branch = seen["branch"].mean((2, 3))
    assert torch.allclose(captured, branch, atol=2e-3, rtol=1e-3)
    assert not torch.allclose(captured, seen["block"].mean((2, 3)), atol=1e-2)


def test_user_named_layers_output_and_input(make_model, data):
    model = make_model("cnn")
    x, y = data("cnn", n=20)
    run, snapshot, config = snapshot_at_attach(model, x, y, layers=["features.3", "fc:input"])
    assert run.layers == ["features.3", "fc:input"]
    assert {k: v.shape for k, v in snapshot.features.items()} == {
        "features.3": (20, 16), "fc:input": (20, 16)}
    hooks = {layer["name"]: layer["hook"] for layer in config["layers"]}
    assert hooks == {"features.3": "output", "fc:input": "input"}


def test_unknown_layer_name_lists_valid_ones(make_model, data):
    model = make_model("cnn")
    x, y = data("cnn", n=20)
    with pytest.raises(ValueError, match=r"'feature\.3'.*'features\.3'"):
        capture.attach(model, probe=(x, y), layers=["feature.3"], transport=MemoryTransport())
    with pytest.raises(ValueError, match=r"'fc:output'"):
        capture.attach(model, probe=(x, y), layers=["fc:output"], transport=MemoryTransport())


def test_pooling_shapes_and_values():
    gen = torch.Generator().manual_seed(0)
    conv = torch.randn(5, 3, 4, 6, generator=gen)
    assert torch.allclose(pool_features(conv, "channels"), conv.mean((2, 3)))
    conv1d = torch.randn(5, 3, 7, generator=gen)
    assert torch.allclose(pool_features(conv1d, "channels"), conv1d.mean(2))
    tokens = torch.randn(5, 7, 8, generator=gen)
    assert torch.allclose(pool_features(tokens, "tokens"), tokens.mean(1))
    assert torch.equal(pool_features(tokens, "tokens", "cls"), tokens[:, 0])
    seq_first = tokens.transpose(0, 1)
    assert torch.allclose(pool_features(seq_first, "tokens_seq_first"), tokens.mean(1))
    rnn_output = (tokens, (torch.zeros(1, 5, 8), torch.zeros(1, 5, 8)))
    assert torch.allclose(pool_features(rnn_output, "tokens"), tokens.mean(1))
    assert pool_features(torch.arange(5.0), "tokens").shape == (5, 1)
    lengths = torch.tensor([7, 5, 3, 2, 1])
    packed = pack_padded_sequence(tokens, lengths, batch_first=True)
    expected = torch.stack([tokens[i, :n].mean(0) for i, n in enumerate(lengths)])
    assert torch.allclose(pool_features(packed, "tokens"), expected, atol=1e-6)
    with pytest.raises(TypeError, match="cannot capture a value of type str"):
        pool_features("not a tensor", "tokens")


class TinyTransformer(nn.Module):
    """Token ids [B, T] -> logits [B, 3] through one encoder layer (batch first)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


class SeqFirstLSTM(nn.Module):
    """Inputs [B, T, 4] -> logits [B, 3] through a sequence-first LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.transpose(0, 1))
        return self.head(out[-1])


def test_token_models_pool_over_tokens(make_model):
    torch.manual_seed(0)
    tokens = torch.randint(0, 20, (12, 9))
    model = TinyTransformer()
    run, snapshot, _ = snapshot_at_attach(model, tokens, token_pool="cls")
    assert run.layers == ["encoder.self_attn", "head:input"]
    assert {k: v.shape for k, v in snapshot.features.items()} == {
        "encoder.self_attn": (12, 16), "head:input": (12, 16)}
    lstm = SeqFirstLSTM()
    run, snapshot, _ = snapshot_at_attach(lstm, torch.randn(12, 5, 4))
    assert run.layers == ["lstm", "head:input"]
    assert snapshot.features["lstm"].shape == (12, 6)  # the batch axis is found in [T, B, D]


def test_wide_layer_is_projected_to_a_fixed_seeded_basis():
    def wide():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(8, 5000), nn.ReLU(), nn.Linear(5000, 3))
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(1))
    _, first, config = snapshot_at_attach(wide(), x)
    _, again, _ = snapshot_at_attach(wide(), x)
    assert first.features["2:input"].shape == (10, PROJECTED_DIM)
    assert (first.features["2:input"] == again.features["2:input"]).all()
    layer = next(item for item in config["layers"] if item["name"] == "2:input")
    assert layer["projected_from"] == 5000 and layer["dim"] == PROJECTED_DIM
    assert layer["projection"]["kind"] == "gaussian"
    assert first.features["0"].shape == (10, PROJECTED_DIM)  # the 5000-wide block too
