"""Snapshots: taken at the right steps, with the right shapes, dtypes and prediction outputs."""

import numpy as np
import pytest
import torch
from torch import nn

from sentrycam import capture
from sentrycam.capture.transport import MemoryTransport

OUTPUT_DTYPES = {"pred": np.int64, "confidence": np.float32, "loss": np.float32,
                 "entropy": np.float32, "margin": np.float32}


def test_snapshots_every_n_steps_with_shapes_and_dtypes(make_model, data, train):
    model = make_model("cnn")
    x, y = data("cnn", n=300)  # more than one probe chunk of 256
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), every=3, overhead_budget=None,
                         transport=transport)
    train(model, x, y, 10)
    run.detach()
    snapshots = transport.of_kind("snapshot")
    assert [s.step for s in snapshots] == [0, 3, 6, 9]
    widths = {"features.1": 8, "features.4": 16, "features.8": 16, "fc:input": 16}
    for snapshot in snapshots:
        assert snapshot.sample_ids.dtype == np.int64 and len(snapshot.sample_ids) == 300
        assert {k: (v.shape, v.dtype) for k, v in snapshot.features.items()} == {
            name: ((300, width), np.float16) for name, width in widths.items()}
        assert {k: (v.shape, v.dtype.type) for k, v in snapshot.outputs.items()} == {
            name: ((300,), dtype) for name, dtype in OUTPUT_DTYPES.items()}
        assert snapshot.nonfinite == dict.fromkeys(widths, 0)
        assert snapshot.epoch == 0
    # training moves the representation: the last snapshot differs from the first
    assert not np.array_equal(snapshots[0].features["fc:input"], snapshots[-1].features["fc:input"])
    assert transport.of_kind("status")[-1].snapshot_every == 3


def test_snapshot_features_match_an_eval_forward(make_model, data, train):
    model = make_model("mlp")
    x, y = data("mlp", n=40)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), every=5, overhead_budget=None, transport=transport)
    train(model, x, y, 6)  # snapshots after the updates of steps 0 and 5: the last is final
    run.detach()
    model.eval()
    with torch.no_grad():
        expected = torch.relu(model.fc2(torch.relu(model.fc1(x))))  # the input of fc3
    captured = transport.of_kind("snapshot")[-1].features["fc3:input"]
    assert np.allclose(captured.astype(np.float32), expected.numpy(), atol=1e-2, rtol=1e-3)


def test_epoch_schedule_snapshots_when_the_epoch_changes(make_model, data, train):
    model = make_model("mlp")
    x, y = data("mlp")
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), every="epoch", overhead_budget=None,
                         transport=transport)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in (1, 2):
        train(model, x, y, 4, optimizer=optimizer, seed=epoch)
        run.log(epoch=epoch, val_loss=0.5)
    run.log(epoch=2)  # unchanged epoch: no new snapshot
    run.detach()
    # labelled with the last step of the epoch just finished
    assert [(s.step, s.epoch) for s in transport.of_kind("snapshot")] == [(3, 1), (7, 2)]
    logged = [m for m in transport.of_kind("scalars") if "val_loss" in m.values]
    assert [(m.step, m.values["epoch"]) for m in logged] == [(3, 1.0), (7, 2.0)]


def test_prediction_outputs_on_a_known_model():
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model.bias.zero_()
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-3.0, -1.0]])
    labels = torch.tensor([0, 2, 1, 2])
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, labels), transport=transport)
    run.snapshot()
    run.detach()
    outputs = transport.of_kind("snapshot")[0].outputs
    logits = x.numpy() @ model.weight.detach().numpy().T
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    top2 = np.sort(probs, axis=1)[:, ::-1][:, :2]
    assert outputs["pred"].tolist() == [0, 1, 0, 2]
    np.testing.assert_allclose(outputs["confidence"], probs.max(1), rtol=1e-5)
    np.testing.assert_allclose(outputs["loss"], -np.log(probs[np.arange(4), labels.numpy()]),
                               rtol=1e-4)
    np.testing.assert_allclose(outputs["entropy"], -(probs * np.log(probs)).sum(1), rtol=1e-5)
    np.testing.assert_allclose(outputs["margin"], top2[:, 0] - top2[:, 1], rtol=1e-5, atol=1e-7)


class TwoHeads(nn.Module):
    """Returns a dict (logits first) and keeps a frozen, eval-mode submodule during training."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8))
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> dict:
        hidden = self.body(x)
        return {"logits": self.head(hidden), "hidden": hidden}


def test_dict_outputs_and_per_module_modes_are_restored(data):
    x, y = data("mlp", n=20)
    model = TwoHeads()
    model.train()
    model.body[1].eval()  # a frozen norm inside a training model
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), transport=transport)
    run.snapshot()
    run.detach()
    assert model.training and model.head.training and not model.body[1].training
    assert transport.of_kind("snapshot")[0].outputs["pred"].shape == (20,)


class RecordsTrain(nn.Module):
    """A model whose ``train`` override must run when the probe switches to eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)
        self.modes: list[bool] = []

    def train(self, mode: bool = True) -> "RecordsTrain":
        self.modes.append(mode)
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_a_train_override_is_called_for_the_probe_pass(data):
    x, y = data("mlp", n=20)
    model = RecordsTrain()
    run = capture.attach(model, probe=(x, y), transport=MemoryTransport())
    model.modes.clear()
    run.snapshot()
    run.detach()
    assert model.modes == [False] and model.training and model.fc.training


@pytest.mark.parametrize("output", ["sequence", "scalar"])
def test_outputs_are_skipped_when_the_model_output_is_not_2d(output):
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            out = self.fc(x)
            return out[:, None, :].repeat(1, 2, 1) if output == "sequence" else out.sum(1)

    transport = MemoryTransport()
    run = capture.attach(Odd(), probe=(torch.randn(6, 3), None), transport=transport)
    run.snapshot()
    run.detach()
    snapshot = transport.of_kind("snapshot")[0]
    assert snapshot.outputs == {}
    assert snapshot.features["fc:input"].shape == (6, 3)


def test_without_a_probe_there_are_no_snapshots_but_signals_flow(make_model, data, train):
    model = make_model("cnn")
    x, y = data("cnn")
    transport = MemoryTransport()
    run = capture.attach(model, criterion=None, overhead_budget=None, stats_every=2,
                         transport=transport)
    train(model, x, y, 4)
    run.detach()
    assert run.probe_size == 0
    assert transport.of_kind("snapshot") == [] and transport.of_kind("probe") == []
    kinds = {m.kind for m in transport.messages}
    assert {"run_start", "scalars", "layer_stats", "status", "run_end"} <= kinds
    assert transport.of_kind("status")[-1].snapshot_every == 0
    activation_steps = [m.step for m in transport.of_kind("layer_stats") if "act_std" in m.stats]
    assert activation_steps == [0, 2]
