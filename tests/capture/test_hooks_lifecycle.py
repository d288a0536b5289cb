"""Hooks come and go cleanly: detach removes all, re-attach never doubles, optimizers are found."""

import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.optim import optimizer as torch_optimizer

from sentrycam import capture
from sentrycam.capture.transport import MemoryTransport

MODULE_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                     "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
                     "_backward_hooks", "_backward_pre_hooks")


def hook_state(*objects):
    """Every hook registry a run could touch: module, optimizer and torch's global ones."""
    state = {}
    for obj in objects:
        modules = obj.named_modules() if isinstance(obj, nn.Module) else [("", obj)]
        for name, module in modules:
            for attr in MODULE_HOOK_DICTS + ("_optimizer_step_pre_hooks",
                                             "_optimizer_step_post_hooks"):
                if hasattr(module, attr):
                    state[(id(obj), name, attr)] = list(getattr(module, attr).keys())
    for obj in objects:
        if isinstance(obj, nn.Module):
            for name, param in obj.named_parameters():
                hooks = param._post_accumulate_grad_hooks
                state[(id(obj), name, "post_accumulate")] = list(hooks or {})
    state["global_pre"] = list(torch_optimizer._global_optimizer_pre_hooks.keys())
    state["global_post"] = list(torch_optimizer._global_optimizer_post_hooks.keys())
    state["global_forward"] = list(nn.modules.module._global_forward_hooks.keys())
    return state


def per_step_scalars(transport):
    """Scalars messages sent by the step hooks (they always carry the learning rate)."""
    return [m for m in transport.of_kind("scalars") if "lr" in m.values]


@pytest.mark.parametrize("pass_optimizer", [True, False])
def test_detach_restores_every_hook_registry(make_model, data, train, pass_optimizer):
    model = make_model("cnn")
    x, y = data("cnn")
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = hook_state(model, criterion, optimizer)
    run = capture.attach(model, probe=(x, y), criterion=criterion,
                         optimizer=optimizer if pass_optimizer else None, every=2,
                         overhead_budget=None, stats_every=2, transport=MemoryTransport())
    assert hook_state(model, criterion, optimizer) != before  # the run did hook something
    train(model, x, y, 3, optimizer=optimizer, criterion=criterion)
    run._arm_stats()  # leave the layer hooks registered, as between two steps
    run.detach()
    assert hook_state(model, criterion, optimizer) == before


def test_detach_before_any_step_removes_the_global_optimizer_hook(make_model, data):
    model = make_model("mlp")
    x, y = data("mlp")
    before = hook_state(model)
    run = capture.attach(model, probe=(x, y), transport=MemoryTransport())
    assert len(torch_optimizer._global_optimizer_pre_hooks) == len(before["global_pre"]) + 1
    run.detach()
    assert hook_state(model) == before


def test_global_hook_hands_over_to_the_models_own_optimizer(make_model, data, train):
    model, other = make_model("mlp"), make_model("mlp", seed=1)
    x, y = data("mlp")
    transport = MemoryTransport()
    run = capture.attach(model, probe=(x, y), transport=transport)
    train(other, x, y, 2)  # another model's optimizer: not counted, not adopted
    assert run.step == 0 and len(torch_optimizer._global_optimizer_pre_hooks) == 1
    optimizer = train(model, x, y, 4)
    assert run.step == 4
    assert len(torch_optimizer._global_optimizer_pre_hooks) == 0  # others pay nothing now
    assert len(optimizer._optimizer_step_post_hooks) == 1
    # the pre-hook is registered only while a telemetry step may come next
    assert len(optimizer._optimizer_step_pre_hooks) <= 1
    run.detach()
    assert len(optimizer._optimizer_step_pre_hooks) == 0
    assert len(optimizer._optimizer_step_post_hooks) == 0
    assert [m.step for m in per_step_scalars(transport)] == [0, 1, 2, 3]


def test_reattach_detaches_the_old_run_and_never_doubles_hooks(make_model, data, train):
    model = make_model("cnn")
    x, y = data("cnn")
    criterion = nn.CrossEntropyLoss()
    first, second = MemoryTransport(), MemoryTransport()
    for transport in (first, second):  # a notebook cell run twice
        run = capture.attach(model, probe=(x, y), criterion=criterion, every=2,
                             overhead_budget=None, stats_every=1, transport=transport)
    assert len(criterion._forward_hooks) == 1
    train(model, x, y, 5, criterion=criterion)
    run.detach()  # finishes the snapshot of step 4, whose probe pass is spread over steps
    steps = [m.step for m in per_step_scalars(second)]
    assert steps == [0, 1, 2, 3, 4]  # one message per step, not two
    assert all(len(m.layers) == len(set(m.layers)) for m in second.of_kind("layer_stats"))
    assert [m.step for m in second.of_kind("snapshot")] == [0, 2, 4]
    assert per_step_scalars(first) == []
    assert [m.status for m in first.of_kind("run_end")] == ["detached"]


def test_context_manager_marks_a_crashed_run_failed_and_unhooks(make_model, data, train):
    model = make_model("mlp")
    x, y = data("mlp")
    before = hook_state(model)
    transport = MemoryTransport()
    with pytest.raises(RuntimeError, match="boom"):
        with capture.attach(model, probe=(x, y), transport=transport) as run:
            train(model, x, y, 2)
            raise RuntimeError("boom")
    assert [m.status for m in transport.of_kind("run_end")] == ["failed"]
    assert hook_state(model) == before
    assert run.step == 2


def test_context_manager_finishes_and_detach_is_idempotent(make_model, data, train):
    model = make_model("mlp")
    x, y = data("mlp")
    transport = MemoryTransport()
    with capture.attach(model, probe=(x, y), transport=transport) as run:
        train(model, x, y, 3)
    run.detach()
    run.log(val_loss=1.0)  # after detach: ignored, no error
    ends = transport.of_kind("run_end")
    assert [(m.status, m.step) for m in ends] == [("finished", 2)]  # the last step: 0, 1, 2
    assert transport.messages[-1].kind == "run_end"
    status = transport.of_kind("status")[-1]
    assert status.step == 2 and status.dropped == 0


def test_importing_capture_loads_nothing_of_the_web_stack():
    code = ("import sys, sentrycam.capture as c; c.attach; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette', "
            "'uvicorn', 'panel', 'bokeh', 'duckdb', 'pyarrow', 'umap', 'websockets'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
