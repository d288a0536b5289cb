"""A snapshot's probe pass is spread over the steps after it, at the weights of its step."""

import copy

import numpy as np
import torch

from sentrycam import capture
from sentrycam.capture.transport import MemoryTransport

PROBE = 300


def _one_shot(make_model, state: dict, x, y):
    """The snapshot a one-shot probe pass takes of a model holding ``state``."""
    model = make_model("cnn")
    model.load_state_dict(state)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), overhead_budget=None, transport=transport)
    run.snapshot()  # before any step: one pass, at once, at these weights
    run.detach()
    (snapshot,) = transport.of_kind("snapshot")
    return snapshot


def _watched(make_model, data, kind: str):
    """A ``kind`` model with a snapshot every 10 steps of a PROBE-sample probe."""
    model = make_model(kind)
    x, y = data(kind, n=PROBE)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), every=10, overhead_budget=None,
                         transport=transport)
    return model, x, y, transport, run


def test_spread_snapshot_equals_a_one_shot_pass_at_its_step(make_model, data, train):
    model, x, y, transport, run = _watched(make_model, data, "cnn")
    at_step_10, sent_by_then = {}, []

    def each_step(step: int) -> None:
        if step == 10:  # the snapshot's step, after its update: what the slices must see
            at_step_10.update(copy.deepcopy(model.state_dict()))
            sent_by_then.extend(s.step for s in transport.of_kind("snapshot"))

    train(model, x, y, 20, each_step=each_step)
    run.detach()
    assert sent_by_then == [0]  # the pass of step 10 was not done within step 10 ...
    spread = {s.step: s for s in transport.of_kind("snapshot")}[10]  # ... but within 10 steps
    assert [s.step for s in transport.of_kind("snapshot")] == [0, 10]

    expected = _one_shot(make_model, at_step_10, x, y)
    final = _one_shot(make_model, model.state_dict(), x, y)
    assert spread.features.keys() == expected.features.keys()
    for layer, features in spread.features.items():
        assert features.shape == (PROBE, expected.features[layer].shape[1])
        np.testing.assert_allclose(features.astype(np.float32),
                                   expected.features[layer].astype(np.float32),
                                   rtol=1e-3, atol=1e-3)
        # the model trained on during the slices: its features now are different
        assert not np.allclose(features.astype(np.float32),
                               final.features[layer].astype(np.float32), rtol=1e-3, atol=1e-3)
    for name, values in spread.outputs.items():
        np.testing.assert_allclose(values, expected.outputs[name], rtol=1e-4, atol=1e-5)
    assert spread.step == 10 and spread.nonfinite == expected.nonfinite


def test_a_model_too_large_to_copy_gets_a_one_shot_pass(make_model, data, train):
    model, x, y, transport, run = _watched(make_model, data, "mlp")
    run._runner.max_copy_bytes = 0  # every model is too large: no copy, the pass at once
    sent = []
    train(model, x, y, 12, each_step=lambda step: sent.append(
        [s.step for s in transport.of_kind("snapshot")]))
    run.detach()
    assert sent[10] == [0, 10]  # complete within its own step
    assert torch.isfinite(torch.from_numpy(
        transport.of_kind("snapshot")[-1].features["fc3:input"].astype(np.float32))).all()
