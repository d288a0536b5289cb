"""Per-step telemetry and activation statistics: the values a user reads on the dashboard."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from sentrycam import capture
from sentrycam.capture.activations import STAT_NAMES, activation_stats, effective_rank
from sentrycam.capture.param_telemetry import ParamTelemetry
from sentrycam.capture.transport import MemoryTransport


def by_step(transport, kind):
    return {m.step: m for m in transport.of_kind(kind) if kind != "scalars" or "lr" in m.values}


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def test_loss_lr_and_gradient_telemetry_match_a_manual_computation(make_model, data):
    model = make_model("cnn")
    x, y = data("cnn")
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), criterion=criterion, overhead_budget=None,
                         transport=transport)
    gen = torch.Generator().manual_seed(0)
    expected = []
    for _ in range(5):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        optimizer.zero_grad()
        with torch.no_grad():
            criterion(model(x[:8]), y[:8])  # an evaluation call: not the training loss
        loss = criterion(model(x[idx]), y[idx])
        loss.backward()
        params = [p for p in model.parameters()]
        grads = flat([p.grad for p in params])
        before = flat([p.detach() for p in params]).clone()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        after = flat([p.detach() for p in params])
        expected.append(dict(loss=loss.item(), lr=lr, grad_norm=grads.norm().item(),
                             update_ratio=((after - before).norm() / before.norm()).item(),
                             grads=grads))
    run.detach()
    scalars = by_step(transport, "scalars")
    assert sorted(scalars) == [0, 1, 2, 3, 4]
    for step, want in enumerate(expected):
        got = scalars[step].values
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
        assert got["lr"] == want["lr"]
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4)
        assert got["update_ratio"] == pytest.approx(want["update_ratio"], rel=1e-4)
        assert got["nonfinite_grad"] == 0.0
    assert math.isnan(scalars[0].values["grad_cos"])
    cosine = torch.nn.functional.cosine_similarity(expected[2]["grads"], expected[1]["grads"],
                                                   dim=0)
    assert scalars[2].values["grad_cos"] == pytest.approx(cosine.item(), rel=1e-4)
    assert [scalars[s].values["lr"] for s in range(5)] == [0.1, 0.1, 0.05, 0.05, 0.025]


def test_sampled_telemetry_reads_every_stride_th_element_of_a_large_model(make_model, data):
    # Over the sample limit, the update ratio and the gradient cosine come from every
    # stride-th element of each parameter, the norms from the whole tensors.
    model = make_model("cnn")
    x, y = data("cnn")
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    telemetry = ParamTelemetry(model, sample_limit=total // 3)
    stride = math.ceil(total / (total // 3))
    assert stride > 1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    samples = []
    try:
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[:32]), y[:32]).backward()
            samples.append(flat([p.grad.reshape(-1)[::stride] for p in params]))
            before = flat([p.detach().reshape(-1)[::stride] for p in params]).clone()
            telemetry.before_step()
            optimizer.step()
            scalars, _ = telemetry.unpack(telemetry.after_step().tolist())
            after = flat([p.detach().reshape(-1)[::stride] for p in params])
            assert scalars["update_ratio"] == pytest.approx(
                ((after - before).norm() / before.norm()).item(), rel=1e-4)
            assert scalars["grad_norm"] == pytest.approx(
                flat([p.grad for p in params]).norm().item(), rel=1e-4)
    finally:
        telemetry.close()
    cosine = nn.functional.cosine_similarity(samples[2], samples[1], dim=0)
    assert scalars["grad_cos"] == pytest.approx(cosine.item(), rel=1e-4)


def test_per_layer_norms_cover_every_module_with_parameters(make_model, data, train):
    model = make_model("resnet")
    x, y = data("resnet")
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), overhead_budget=None, transport=transport)
    train(model, x, y, 2)
    run.detach()
    stats = [m for m in transport.of_kind("layer_stats") if m.stats[0] == "grad_norm"]
    assert [m.step for m in stats] == [0, 1]
    last = stats[-1]
    owners = [name for name, m in model.named_modules()
              if any(True for _ in m.parameters(recurse=False))]
    assert list(last.layers) == owners  # includes the downsample shortcut's conv and norm
    assert last.values.shape == (len(owners), 3) and last.values.dtype == np.float32
    weight = dict(zip(last.layers, last.values[:, 1]))
    expected = torch.sqrt(sum(p.detach().square().sum() for p in model.layer2.conv1.parameters()))
    # norms are measured before the step's update, so compare with a tolerance
    assert weight["layer2.conv1"] == pytest.approx(expected.item(), rel=0.05)
    assert (last.values[:, 0] > 0).all() and (last.values[:, 2] > 0).all()


def test_loss_from_run_log_is_attributed_to_the_step_just_taken(make_model, data):
    model = make_model("mlp")
    x, y = data("mlp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), optimizer=optimizer, transport=transport)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        run.log(loss=loss)
        losses.append(loss.item())
    run.detach()
    logged = [(m.step, m.values["loss"]) for m in transport.of_kind("scalars")
              if "loss" in m.values]
    assert logged == [(0, pytest.approx(losses[0])), (1, pytest.approx(losses[1])),
                      (2, pytest.approx(losses[2]))]


def test_activation_statistics_on_a_constructed_batch():
    # units: columns. Column 0 never > 0 (dead), column 1 saturated half the time (|x| > 3).
    units = torch.tensor([[-1.0, 4.0, 1.0, 2.0],
                          [-2.0, 0.5, 3.0, 2.0],
                          [0.0, -5.0, 1.0, float("nan")],
                          [-1.0, 0.5, 3.0, 2.0]])
    stats = dict(zip(STAT_NAMES, activation_stats(units, units, None).tolist()))
    finite = units[torch.isfinite(units)]
    assert stats["act_mean"] == pytest.approx(finite.mean().item(), rel=1e-6)
    assert stats["act_std"] == pytest.approx(finite.std().item(), rel=1e-6)
    assert stats["dead_frac"] == 0.25
    assert stats["sat_frac"] == pytest.approx(2 / 15)
    assert stats["nonfinite"] == 1.0
    tanh_like = torch.tensor([[0.995, -0.999], [0.5, 0.0]])
    sat = activation_stats(tanh_like, tanh_like, (-1.0, 1.0))[STAT_NAMES.index("sat_frac")]
    assert sat.item() == 0.5


def test_activation_statistics_read_a_layer_in_place_as_its_unit_matrix():
    # A conv map [N, C, H, W] read where it lies (units on axis 1) gives the statistics of its
    # [N*H*W, C] unit matrix; with a NaN in it (the masked path) those of the other values.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, 3, 4, generator=gen) * 2.0
    x[:, 2] = -x[:, 2].abs()  # unit 2 never fires
    pooled = x.flatten(2).mean(2)
    unit_dim_stats = dict(zip(STAT_NAMES, activation_stats(x, pooled, None, 1).tolist()))
    matrix = x.movedim(1, -1).reshape(-1, 5)
    assert unit_dim_stats["act_mean"] == pytest.approx(matrix.mean().item(), abs=1e-6)
    assert unit_dim_stats["act_std"] == pytest.approx(matrix.std().item(), rel=1e-5)
    assert unit_dim_stats["dead_frac"] == pytest.approx(0.2)
    assert unit_dim_stats["sat_frac"] == pytest.approx((matrix.abs() > 3).float().mean().item())
    assert unit_dim_stats["nonfinite"] == 0.0
    x[0, 0, 0, 0] = float("nan")
    masked = dict(zip(STAT_NAMES, activation_stats(x, pooled, None, 1).tolist()))
    finite = x[torch.isfinite(x)]
    assert masked["act_mean"] == pytest.approx(finite.mean().item(), abs=1e-6)
    assert masked["act_std"] == pytest.approx(finite.std().item(), rel=1e-5)
    assert masked["dead_frac"] == pytest.approx(0.2)
    assert masked["nonfinite"] == 1.0


def test_effective_rank_of_known_matrices():
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(1, 8, generator=gen)
    rank_one = torch.randn(64, 1, generator=gen) * direction
    assert effective_rank(rank_one).item() == pytest.approx(1.0, abs=1e-3)
    spread = torch.cat([torch.eye(4), -torch.eye(4)]) * 3.0  # centred, 4 equal singular values
    assert effective_rank(spread).item() == pytest.approx(4.0, rel=1e-5)
    assert effective_rank(torch.ones(5, 3)).item() == 0.0


def test_dead_units_are_reported_on_the_training_batch(make_model, data, train):
    model = make_model("mlp")
    with torch.no_grad():  # 8 of fc1's 32 units can never fire, and get no gradient to recover
        model.fc1.weight[:8] = 0.0
        model.fc1.bias[:8] = -1.0
    x, y = data("mlp")
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), overhead_budget=None, stats_every=2,
                         transport=transport)
    train(model, x, y, 6)
    run.detach()
    activation = [m for m in transport.of_kind("layer_stats") if m.stats == STAT_NAMES]
    assert [m.step for m in activation] == [0, 2, 4]
    for message in activation:
        row = dict(zip(STAT_NAMES, message.values[message.layers.index("fc1")]))
        assert row["dead_frac"] == 0.25
        assert row["nonfinite"] == 0
        assert row["eff_rank"] > 1


def test_a_nan_layer_is_flagged_once_and_training_goes_on(make_model, data, capture_warnings):
    model = make_model("nan")
    x, y = data("nan")
    criterion = nn.CrossEntropyLoss()
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), criterion=criterion, every=2,
                         overhead_budget=None, stats_every=1, transport=transport)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(6):
        model.spike.on = step >= 2
        optimizer.zero_grad()
        criterion(model(x[:16]), y[:16]).backward()
        optimizer.step()
    run.detach()
    assert run.step == 6
    assert math.isnan(by_step(transport, "scalars")[5].values["loss"])
    events = transport.of_kind("event")
    assert sorted(e.payload["layer"] for e in events if e.event == "nonfinite") == [
        "fc2:input", "gradients", "loss"]
    assert not [e for e in events if e.event == "capture_disabled"]
    activation = {m.step: m for m in transport.of_kind("layer_stats") if m.stats == STAT_NAMES}
    nonfinite = STAT_NAMES.index("nonfinite")
    assert activation[1].values[1, nonfinite] == 0
    assert activation[3].values[1, nonfinite] == 16 * 32  # every value of the NaN batch
    snapshot = {s.step: s for s in transport.of_kind("snapshot")}[4]
    assert snapshot.nonfinite["fc2:input"] == len(x) * 32
    assert np.isnan(snapshot.features["fc2:input"].astype(np.float32)).all()
    assert len([r for r in capture_warnings.records if "NaN/Inf" in r.getMessage()]) == 3
