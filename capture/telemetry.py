"""Per-step optimizer telemetry: step hooks, loss, learning rates.

- :class:`OptimizerWatch` finds the model's optimizer and calls back around each of its steps.
- :class:`LossWatch` keeps the latest training loss from a hooked criterion (no host sync).
- :class:`~sentrycam.capture.param_telemetry.ParamTelemetry` (its own module) reduces gradients
  and weights on their device.

The per-step messages built from these are assembled in :mod:`sentrycam.capture.steps`.
"""

from __future__ import annotations

import numbers
import weakref
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from sentrycam.protocol.signals import LR


def holds_parameters(optimizer: torch.optim.Optimizer, param_ids: frozenset[int]) -> bool:
    """True when ``optimizer`` updates at least one parameter whose id is in ``param_ids``."""
    return any(id(p) in param_ids for group in optimizer.param_groups for p in group["params"])


def check_training_parts(model: Any, criterion: Any, optimizer: Any) -> None:
    """ValueError for a model without parameters, or a criterion/optimizer that cannot be used."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"attach() needs a torch.nn.Module, got {type(model).__name__}")
    param_ids = frozenset(id(p) for p in model.parameters())
    if not param_ids:
        raise ValueError("the model has no parameters, so there is no training to watch; "
                         "attach to the module whose parameters the optimizer updates")
    if criterion is not None and not isinstance(criterion, nn.Module):
        raise ValueError("criterion must be an nn.Module (e.g. nn.CrossEntropyLoss()) so that "
                         "its output can be hooked; for a functional loss, use run.log(loss=...)")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer, got "
                         f"{type(optimizer).__name__}")
    if optimizer is not None and not holds_parameters(optimizer, param_ids):
        raise ValueError("the optimizer updates none of the model's parameters; pass this "
                         "model's optimizer (or leave optimizer=None to find it automatically)")




def learning_rates(optimizer: Any) -> dict[str, float]:
    """``lr`` of the first param group, and ``lr_group<i>`` for groups that differ from it
    (signals LR and LR_GROUP; a group's own key is torch's ``"lr"``). Tensor learning rates on
    a GPU are skipped: reading them would wait for the device."""
    groups = optimizer.param_groups
    if len(groups) == 1 and type(groups[0].get("lr")) is float:  # the common case, kept cheap
        return {LR.name: groups[0]["lr"]}
    rates: dict[str, float] = {}
    for index, group in enumerate(optimizer.param_groups):
        lr = group.get("lr")
        if isinstance(lr, torch.Tensor):
            lr = float(lr) if lr.device.type == "cpu" else None
        if isinstance(lr, numbers.Real) and (index == 0 or lr != rates.get(LR.name)):
            rates[LR.name if index == 0 else f"{LR.name}_group{index}"] = float(lr)
    return rates


class OptimizerWatch:
    """Calls ``on_pre`` / ``on_post`` around each step of the optimizer that updates the
    model's parameters, as that optimizer's own step hooks: ``(optimizer, args, kwargs)``.

    Given an optimizer, the callbacks are registered on it at once. Otherwise torch's global
    step pre-hook watches every optimizer only until the first one holding a model parameter
    steps; that one gets its own hooks (which torch then calls in that same step, after the
    global hooks), and other optimizers pay nothing afterwards. The global hook cannot be removed
    while torch iterates the global hooks, so that step's own pre-hook is a wrapper that removes
    it; :meth:`want_pre` later puts ``on_pre`` itself in its place.

    ``on_pre`` can be switched off (:meth:`want_pre`) for steps that need nothing before the
    update, so that they do not pay for a call.
    """

    def __init__(self, params: Iterable[nn.Parameter], on_pre: Callable[[Any, tuple, dict], None],
                 on_post: Callable[[Any, tuple, dict], None], guard: Any) -> None:
        self._param_ids = frozenset(id(p) for p in params)
        self._on_pre, self._on_post, self._guard = on_pre, on_post, guard
        self.optimizer: torch.optim.Optimizer | None = None
        self._pre: Any = None  # handle of the own pre-hook while registered
        self._post: Any = None
        self._wrapped = False  # the own pre-hook is _first_pre
        self._global: list[Any] = []
        self._foreign: weakref.WeakSet = weakref.WeakSet()

    def start(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        if optimizer is not None:
            self._adopt(optimizer)
        else:
            self._global = [register_optimizer_step_pre_hook(self._global_pre)]

    def _adopt(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self._wrapped = bool(self._global)
        self._pre = optimizer.register_step_pre_hook(
            self._first_pre if self._wrapped else self._on_pre)
        self._post = optimizer.register_step_post_hook(self._on_post)

    def _global_pre(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        if self._guard.disabled or self.optimizer is not None or optimizer in self._foreign:
            return
        try:
            if holds_parameters(optimizer, self._param_ids):
                self._adopt(optimizer)
            else:
                self._foreign.add(optimizer)
        except Exception as exc:
            self._guard.fail("the optimizer watch", exc)

    def _first_pre(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        self._remove(self._global)  # safe here: this step's global pre-hooks have all been called
        self._on_pre(optimizer, args, kwargs)

    def want_pre(self, wanted: bool) -> None:
        """Have ``on_pre`` called from the next step on, or not. Call it from ``on_post`` (or
        between steps), never while torch runs the pre-hooks; cheap when nothing changes."""
        if self._post is None:  # not adopted yet, or stopped
            return
        if self._wrapped and not self._global:
            self._wrapped = False
            self._remove_pre()
        if wanted and self._pre is None:
            self._pre = self.optimizer.register_step_pre_hook(self._on_pre)
        elif not wanted and self._pre is not None and not self._wrapped:
            self._remove_pre()

    def _remove_pre(self) -> None:
        handle, self._pre = self._pre, None
        if handle is not None:
            handle.remove()

    @staticmethod
    def _remove(handles: list[Any]) -> None:
        while handles:
            handles.pop().remove()

    def stop(self) -> None:
        """Remove every hook this watch registered."""
        self._remove(self._global)
        self._remove_pre()
        if self._post is not None:
            self._post.remove()
            self._post = None
        self._wrapped = False


class LossWatch:
    """Keeps the latest training loss (detached) from a criterion's forward hook, without
    reading it: reading it would wait for the device.

    Calls made with gradients disabled (a validation loop) are ignored.
    """

    def __init__(self, criterion: nn.Module, guard: Any) -> None:
        self.latest: torch.Tensor | None = None
        self._guard = guard
        self._handle = criterion.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        # Runs every step inside the forward pass, so it does one thing: keep a detached view
        # (no copy). Holding the loss itself would keep its autograd graph alive until the
        # optimizer post-hook, and freeing the graph there would cost far more than this view.
        try:
            if torch.is_grad_enabled() and not self._guard.disabled \
                    and isinstance(output, torch.Tensor):
                self.latest = output.detach()
        except Exception as exc:
            self._guard.fail("the criterion hook", exc)

    def take(self) -> torch.Tensor | None:
        """The loss since the last call (detached, shape and dtype as the criterion returned
        it), or None."""
        loss, self.latest = self.latest, None
        return loss

    @staticmethod
    def scalar(loss: torch.Tensor) -> torch.Tensor:
        """Detached float32 0-d loss (the mean, for an unreduced criterion)."""
        loss = loss.detach()
        return loss if loss.ndim == 0 and loss.dtype == torch.float32 else loss.float().mean()

    def remove(self) -> None:
        self._handle.remove()
