"""Gradient clipping: the gradient-norm curve shows the norm before clipping (what
``clip_grad_norm_`` returned), and ``grad_norm_clipped`` the norm the optimizer used."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_

from sentrycam import capture
from sentrycam.capture.clipping import ARM_AHEAD, ClipWatch
from sentrycam.capture.transport import MemoryTransport
from tests.capture.setups.tiny_training import Setup, make_data

MAX_NORM = 0.01  # far below this model's gradient norms (about 0.3)


@pytest.mark.slow
def test_the_curves_show_the_norm_before_clipping_and_the_clipped_norm(live):
    torchs_own = torch.nn.utils.clip_grad_norm_
    setup = Setup()
    run = setup.attach(url=live.url, every=4, run_name="clipping")
    returned = {}
    for step in range(8):
        x, y = next(setup.data)
        setup.criterion(setup.model(x), y).backward()
        if step % 2 == 0:  # clipped on even steps only
            parameters = setup.model.parameters()
            returned[step] = float(torch.nn.utils.clip_grad_norm_(parameters, MAX_NORM))
        setup.optimizer.step()
        setup.optimizer.zero_grad()
    run.detach()
    assert torch.nn.utils.clip_grad_norm_ is torchs_own  # put back at detach
    stored = live.stored("clipping")
    norms, clipped = stored.scalars["grad_norm"], stored.scalars["grad_norm_clipped"]
    assert sorted(norms) == list(range(8))
    assert sorted(clipped) == [0, 2, 4, 6]
    for step, before in returned.items():
        assert before > 10 * MAX_NORM
        assert norms[step] == pytest.approx(before, rel=1e-5)
        assert clipped[step] == pytest.approx(MAX_NORM, rel=1e-3)
    assert all(norms[step] > 10 * MAX_NORM for step in (1, 3, 5, 7))  # unclipped steps as-is


def total_norm(model: torch.nn.Module) -> float:
    """The gradients' total L2 norm as they are now."""
    return float(torch.linalg.vector_norm(torch.stack(
        [p.grad.norm() for p in model.parameters() if p.grad is not None])))


def train_clipping_even_steps(live, run_name: str, clip, accumulate: int = 1
                              ) -> dict[int, tuple[float, float]]:
    """8 steps of ``accumulate`` backward passes each, ``clip(parameters)`` on even ones;
    {step: (norm before, norm after clipping)}."""
    setup = Setup()
    run = setup.attach(url=live.url, every=4, run_name=run_name)
    norms = {}
    for step in range(8):
        for _ in range(accumulate):
            x, y = next(setup.data)
            setup.criterion(setup.model(x), y).backward()
        if step % 2 == 0:
            before = total_norm(setup.model)
            clip(setup.model.parameters())
            norms[step] = (before, total_norm(setup.model))
        setup.optimizer.step()
        setup.optimizer.zero_grad()
    run.detach()
    return norms


@pytest.mark.slow
@pytest.mark.parametrize("clip, accumulate", [
    pytest.param(lambda params: clip_grad_norm_(params, MAX_NORM), 1, id="norm-imported-by-name"),
    pytest.param(lambda params: clip_grad_value_(params, MAX_NORM / 10), 1, id="value"),
    pytest.param(lambda params: clip_grad_norm_(params, MAX_NORM), 3, id="accumulated"),
])
def test_clipping_by_any_torch_function_is_seen(live, clip, accumulate):
    """A clip function bound before attaching, value clipping and the clipping of accumulated
    gradients record both norms too."""
    measured = train_clipping_even_steps(live, "clip-fn", clip, accumulate)
    stored = live.stored("clip-fn")
    norms, clipped = stored.scalars["grad_norm"], stored.scalars["grad_norm_clipped"]
    assert sorted(norms) == list(range(8)) and sorted(clipped) == [0, 2, 4, 6]
    for step, (before, after) in measured.items():
        assert after < before / 10
        assert norms[step] == pytest.approx(before, rel=1e-5)
        assert clipped[step] == pytest.approx(after, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("clip", [False, True], ids=["unscaled", "unscaled-and-clipped"])
def test_a_gradient_scalers_unscaling_is_not_clipping(live, clip):
    """``GradScaler.unscale_`` changes the gradients in place: not clipping, so the curve is the
    unscaled norm; when clipped after it (the usual mixed-precision recipe), the unscaled norm
    before clipping."""
    setup = Setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    run = setup.attach(url=live.url, every=4, run_name="scaled")
    unscaled = {}
    for step in range(4):
        x, y = next(setup.data)
        scaler.scale(setup.criterion(setup.model(x), y)).backward()
        scaler.unscale_(setup.optimizer)
        unscaled[step] = total_norm(setup.model)
        if clip:
            clip_grad_norm_(setup.model.parameters(), MAX_NORM)
        scaler.step(setup.optimizer)
        scaler.update()
        setup.optimizer.zero_grad()
    run.detach()
    stored = live.stored("scaled")
    norms = stored.scalars["grad_norm"]
    assert sorted(norms) == list(range(4))
    assert all(norms[step] == pytest.approx(unscaled[step], rel=1e-5) for step in range(4))
    clipped = stored.scalars.get("grad_norm_clipped", {})
    assert sorted(clipped) == (list(range(4)) if clip else [])
    assert all(value == pytest.approx(MAX_NORM, rel=1e-3) for value in clipped.values())


def test_the_norm_before_clipping_is_measured_only_for_steps_whose_telemetry_is_due():
    """Backward passes before a step whose telemetry is not taken measure nothing; those
    before a telemetry step still give the norm before clipping (what clip_grad_norm_ saw)."""
    setup = Setup()
    telemetry_steps = {0, 3, 4}
    step = 0
    watch = ClipWatch(list(setup.model.parameters()), due=lambda: step in telemetry_steps)
    try:
        for step in range(6):
            x, y = next(setup.data)
            setup.criterion(setup.model(x), y).backward()
            returned = float(clip_grad_norm_(setup.model.parameters(), MAX_NORM))
            taken = watch.take()
            if step in telemetry_steps:
                assert float(taken) == pytest.approx(returned, rel=1e-5), step
            else:
                assert taken is None, step
            setup.optimizer.step()
            setup.optimizer.zero_grad()
    finally:
        watch.close()


def test_far_apart_telemetry_steps_leave_backward_unhooked_and_still_see_clipping():
    """Between telemetry steps more than ARM_AHEAD apart the watch's hooks are off; the step
    before a telemetry step is a full one that puts them back, so its norm before clipping is
    still what clip_grad_norm_ saw."""
    setup = Setup()
    step, due = 0, 10
    watch = ClipWatch(list(setup.model.parameters()), due=lambda: step == due)
    try:
        assert watch.plan(0, due, until=64) == due - 1 and not watch.armed
        assert watch.plan(due - ARM_AHEAD, due, until=64) == 64 and watch.armed  # near: kept
        assert watch.plan(0, due, until=5) == 5 and not watch.armed
        for step in range(1, due + 1):
            x, y = next(setup.data)
            setup.criterion(setup.model(x), y).backward()
            returned = float(clip_grad_norm_(setup.model.parameters(), MAX_NORM))
            taken = watch.take()
            assert (taken is None) if step < due else float(taken) == pytest.approx(returned,
                                                                                    rel=1e-5)
            setup.optimizer.step()
            setup.optimizer.zero_grad()
            if step == due - 1:  # the full step before the telemetry step
                assert watch.plan(step, due, until=64) == 64 and watch.armed
            assert watch.armed == (step >= due - 1)
    finally:
        watch.close()
    assert not watch.armed


def test_a_long_run_at_the_defaults_sees_clipping_on_its_sparse_telemetry_steps():
    """Past the minimum cadence's first steps telemetry thins out (more than ARM_AHEAD steps
    apart at the end): every telemetry step still shows the norm before clipping."""
    setup = Setup()
    transport = MemoryTransport()
    run = capture.attach(setup.model, make_data(), criterion=setup.criterion,
                         optimizer=setup.optimizer, transport=transport)
    returned = []
    for _ in range(1_000):
        x, y = next(setup.data)
        setup.criterion(setup.model(x), y).backward()
        returned.append(float(clip_grad_norm_(setup.model.parameters(), MAX_NORM)))
        setup.optimizer.step()
        setup.optimizer.zero_grad()
    run.detach()
    norms = {m.step: m.values for m in transport.of_kind("scalars") if "grad_norm" in m.values}
    steps = sorted(norms)
    assert steps[-1] - steps[-2] > ARM_AHEAD
    for step in steps:
        assert norms[step]["grad_norm"] == pytest.approx(returned[step], rel=1e-5), step
        assert norms[step]["grad_norm_clipped"] == pytest.approx(MAX_NORM, rel=1e-3), step
