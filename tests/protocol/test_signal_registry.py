"""The signal registry: wire names stay put, and declaring a signal is all it takes to have it
packed by capture, read by name, and shown by the dashboard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bokeh.models import LogColorMapper
from torch import nn

from sentrycam import capture
from sentrycam.capture.transport import MemoryTransport
from sentrycam.frontend.signal_views import CurvesView, HeatmapView
from sentrycam.protocol import signals
from sentrycam.protocol.messages import LayerStats
from sentrycam.protocol.push import LayerStatsHeader, ScalarsHeader
from sentrycam.protocol.signals import SIGNALS, Scope, Signal, Source, View


def test_wire_names_and_packing_order_are_those_stored_runs_use():
    assert signals.TELEMETRY_SCALARS == ("grad_norm", "grad_cos", "update_ratio")
    assert signals.PARAMETER_STATS == ("grad_norm", "weight_norm", "update_ratio")
    assert signals.ACTIVATION_STATS == ("act_mean", "act_std", "dead_frac", "sat_frac",
                                        "eff_rank", "nonfinite")
    assert [s.name for s in signals.heatmaps()] == ["grad_norm", "act_std", "dead_frac",
                                                    "update_ratio", "eff_rank"]
    assert signals.curve_panels() == (("loss", False), ("validation metrics", False),
                                      ("learning rate", True), ("gradient norm", False))


def test_each_signal_is_declared_once_and_shown_where_its_scope_allows():
    keys = [(s.name, s.scope) for s in SIGNALS]
    assert len(keys) == len(set(keys))
    for signal in SIGNALS:
        assert signal.view is not View.HEATMAP or signal.scope is Scope.LAYER, signal.name
        assert signal.view is not View.CURVE or signal.scope is Scope.STEP, signal.name
        assert signal.view is View.NONE or signal.title, signal.name


@pytest.mark.parametrize("name, panel", [
    ("loss", "loss"), ("val_loss", "loss"), ("test_loss", "loss"), ("val_acc",
                                                                    "validation metrics"),
    ("lr", "learning rate"), ("lr_group2", "learning rate"), ("grad_norm", "gradient norm"),
    ("grad_cos", None), ("nonfinite_grad", None), ("sentrycam/overhead", None)])
def test_a_scalar_goes_to_the_curve_panel_its_signal_names(name, panel):
    assert signals.curve_of(name) == panel
    view = CurvesView()
    view.take(ScalarsHeader(run_id="r", names=[name]), {"name": np.zeros(2, np.int32), "step": np.arange(2),
                                  "value": np.array([1.0, 2.0])})
    drawn_in = [title for title, fig in view.figures.items()
                if any(r.data_source is view.sources[name] for r in fig.renderers)]
    assert drawn_in == ([panel] if panel else [])


def test_every_heatmap_signal_has_a_figure_with_its_title_and_scale():
    view = HeatmapView(lambda step: None)
    for signal in signals.heatmaps():
        assert view.figures[signal.name].title.text == signal.title
        assert isinstance(view.mappers[signal.name], LogColorMapper) == signal.log_scale


def test_a_new_registry_signal_is_packed_and_shown():
    new = Signal("spike_frac", Scope.LAYER, Source.ACTIVATIONS, "a made-up statistic",
                 View.HEATMAP, "spike fraction", log_scale=True)
    registry = SIGNALS + (new,)
    assert signals.packed(Source.ACTIVATIONS, Scope.LAYER, registry) == (
        signals.ACTIVATION_STATS + ("spike_frac",))
    heatmaps = [(s.name, s.title, s.log_scale) for s in signals.heatmaps(registry)]
    view = HeatmapView(lambda step: None, heatmaps)
    view.take(LayerStatsHeader(run_id="r", layers=["fc1"], stats=["act_std", "spike_frac"]),
              {"step": np.array([4, 4]), "layer": np.array([0, 0]), "stat": np.array([0, 1]),
               "value": np.array([0.5, 0.01])})
    assert view.figures["spike_frac"].title.text == "spike fraction"
    assert view.sources["spike_frac"].data["value"] == [0.01]


def test_every_packed_signal_reaches_the_wire_from_a_tiny_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 3))
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), criterion=criterion, overhead_budget=None,
                         stats_every=1, transport=transport)
    for _ in range(4):
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
    run.detach()
    stats = {name for m in transport.messages if isinstance(m, LayerStats) for name in m.stats}
    scalars = {name for m in transport.of_kind("scalars") for name in m.values}
    assert set(signals.PARAMETER_STATS) | set(signals.ACTIVATION_STATS) == stats
    assert set(signals.TELEMETRY_SCALARS) | {signals.NONFINITE_GRAD.name, signals.LOSS.name,
                                             signals.LR.name} == scalars
    steps = [s for s in SIGNALS if s.scope is Scope.STEP]
    assert all(any(s.matches(name) for s in steps) for name in scalars)
