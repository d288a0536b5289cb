"""Per-step optimizer telemetry: step hooks, loss, gradient/weight norms, host copies.

- :class:`OptimizerWatch` finds the model's optimizer and calls back around each of its steps.
- :class:`LossWatch` keeps the latest training loss from a hooked criterion (no host sync).
- :class:`ParamTelemetry` reduces gradients and weights on their device: global and per-layer
  gradient norm, per-layer weight norm, update-to-weight ratio and the cosine between this
  telemetry step's gradient and the previous one's (both from a strided sample of at most about
  ``SAMPLE_LIMIT`` elements, so memory stays bounded on large models).

The per-step messages built from these are assembled in :mod:`sentrycam.capture.steps`.
Per-layer telemetry is per module that owns parameters directly (``model.named_modules()``
names; ``"(model)"`` for parameters of the model itself).
"""

from __future__ import annotations

import math
import numbers
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from sentrycam.capture.clipping import ClipWatch
from sentrycam.capture.layers import ROOT_NAME
from sentrycam.protocol.signals import (GRAD_COS, GRAD_NORM, GRAD_NORM_CLIPPED, LAYER_GRAD_NORM,
                                        LAYER_UPDATE_RATIO, LR, NONFINITE_GRAD, PARAMETER_STATS,
                                        TELEMETRY_SCALARS, UPDATE_RATIO, WEIGHT_NORM)

#: Per-layer statistics of the parameter telemetry, in packing order (from the registry).
LAYER_STATS = PARAMETER_STATS
SAMPLE_LIMIT = 1_000_000
COS_EPS = 1e-8
#: Sample buffers of :class:`ParamTelemetry`: the weights, and two for the gradients.
WEIGHT_SLOT, GRAD_SLOTS = 0, (1, 2)


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


def parameter_owners(model: nn.Module) -> tuple[list[str], list[nn.Parameter], list[int]]:
    """(layer names, parameters, owning layer index per parameter); shared parameters count once."""
    names: list[str] = []
    params: list[nn.Parameter] = []
    owners: list[int] = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        if not own:
            continue
        names.append(name or ROOT_NAME)
        for p in own:
            seen.add(id(p))
            params.append(p)
            owners.append(len(names) - 1)
    return names, params, owners


def _dense(grad: torch.Tensor | None) -> torch.Tensor | None:
    if grad is not None and grad.is_sparse:
        return grad.coalesce().values()
    return grad


@dataclass
class _Before:
    """What ``before_step`` measured, on the device: per-parameter weight norms float32 [P]
    and the weight sample float32 [S]."""

    weight_norms: torch.Tensor
    weight_sample: torch.Tensor


class ParamTelemetry:
    """Gradient and weight statistics of one optimizer step, reduced on the device.

    Call :meth:`before_step` in the optimizer pre-hook and :meth:`after_step` in its post-hook;
    the latter returns one float32 vector [H + S * L] laid out by the signal registry: the
    H = len(TELEMETRY_SCALARS) per-step values (grad_norm, grad_cos, update_ratio), then for
    each of the S = len(LAYER_STATS) per-layer statistics (grad_norm, weight_norm,
    update_ratio) its values for the L layers, then the gradient norm before clipping (NaN
    when the step's gradients were not clipped). :meth:`unpack` reads it. Per-layer gradient
    norms are those the optimizer uses (after clipping). Call :meth:`close` when done.
    """

    def __init__(self, model: nn.Module, sample_limit: int = SAMPLE_LIMIT,
                 clip_due: Callable[[], bool] | None = None) -> None:
        """``clip_due``: asked as each backward pass ends, whether the coming optimizer step is a
        telemetry step (only those measure the gradient norm before clipping); None: every one."""
        self.layers, self._params, owners = parameter_owners(model)
        total = sum(p.numel() for p in self._params)
        self._stride = max(1, math.ceil(total / sample_limit))
        self._sizes = [math.ceil(p.numel() / self._stride) for p in self._params]
        self.device = self._params[0].device
        #: float32 on one device: the norms and samples need no conversion.
        self._uniform = all(p.dtype == torch.float32 and p.device == self.device
                            for p in self._params)
        #: the sample is the parameters themselves (uniform, stride 1): copied as they are.
        self._whole = self._uniform and self._stride == 1
        self._owners = torch.tensor(owners, device=self.device)
        self._owner_subsets: dict[tuple[int, ...], torch.Tensor] = {}
        self._absent_layers: dict[int, torch.Tensor] = {}  # see _absent
        self._before: _Before | None = None
        #: the previous telemetry step's gradient sample float32 [S] and its norm (0-d)
        self._previous_grad: tuple[torch.Tensor, torch.Tensor] | None = None
        #: sample buffers (see _sample): the weights before the step, then two gradient
        #: samples in turn, this step's and the previous one's (at _grad_slot and the other).
        self._buffers: list[tuple[torch.Tensor, list[torch.Tensor]] | None] = [None] * 3
        self._grad_slot = GRAD_SLOTS[0]
        #: the gradient norm before clipping; its owner plans its hooks (ClipWatch.plan)
        self.clip = ClipWatch(self._params, due=clip_due)

    def close(self) -> None:
        """Stop watching gradient clipping (removes its gradient hooks)."""
        self.clip.close()

    def _owners_of(self, present: list[int]) -> torch.Tensor:
        """Owning layers of a subset of parameters, cached: the set of parameters with gradients
        rarely changes, and building the index on a GPU would wait for the device each time."""
        key = tuple(present)
        if key not in self._owner_subsets:
            self._owner_subsets[key] = self._owners[torch.tensor(present, device=self.device)]
        return self._owner_subsets[key]

    @property
    def vector_size(self) -> int:
        return len(TELEMETRY_SCALARS) + len(LAYER_STATS) * len(self.layers) + 1

    def _norms(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-tensor 2-norms, float32 [len(tensors)], in one batched reduction."""
        norms = torch._foreach_norm(list(tensors), 2, dtype=torch.float32)
        if self._uniform:
            return torch.stack(norms)
        return torch.stack([n.to(self.device) for n in norms])

    def _layer_squares(self, norms: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Summed squares per layer of per-tensor norms: float32 [K, P] -> [K, L]."""
        return torch.zeros(norms.shape[0], len(self.layers), device=self.device).index_add_(
            1, owners, norms.square())

    def _per_layer(self, norms: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Root of summed squares per layer; NaN for layers with no entry. float32 [L]."""
        squares = self._layer_squares(norms.reshape(1, -1), owners)[0]
        return squares.sqrt_().masked_fill_(self._absent(owners), math.nan)

    def _absent(self, owners: torch.Tensor) -> torch.Tensor:
        """bool [L]: the layers no entry of ``owners`` belongs to, cached per owners tensor
        (the full index or a cached subset: both live as long as this object)."""
        key = id(owners)
        if key not in self._absent_layers:
            present = torch.zeros(len(self.layers), dtype=torch.bool, device=self.device)
            present[owners] = True
            self._absent_layers[key] = ~present
        return self._absent_layers[key]

    def _pieces(self, tensors: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        """Every ``stride``-th element of each tensor as a float32 1-D tensor on
        ``self.device`` (a view where no conversion is needed; zeros for a missing or sparse
        one): the pieces of a sample, [size_i] each."""
        if self._whole:
            return [torch.zeros(size, device=self.device) if t is None or t.is_sparse
                    else t.detach().reshape(-1) for t, size in zip(tensors, self._sizes)]
        return [torch.zeros(size, device=self.device) if t is None or t.is_sparse
                else t.detach().reshape(-1)[::self._stride].float().to(self.device)
                for t, size in zip(tensors, self._sizes)]

    def _slot(self, slot: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Sample buffer ``slot``, float32 [S] on ``self.device``, and its per-parameter views:
        shaped as the parameters when the sample is the whole parameters (:attr:`_whole`),
        else [size_i]. Allocated once: a fresh sample-sized buffer at every firing would cost
        page faults each time, as a freed block of that size goes back to the system."""
        if self._buffers[slot] is None:
            buffer = torch.empty(sum(self._sizes), device=self.device)
            views = list(buffer.split(self._sizes))
            if self._whole:
                views = [view.view(p.shape) for view, p in zip(views, self._params)]
            self._buffers[slot] = (buffer, views)
        return self._buffers[slot]

    def _sample(self, tensors: Sequence[torch.Tensor | None], slot: int) -> torch.Tensor:
        """The pieces of ``tensors`` (:meth:`_pieces`) written into buffer ``slot`` (valid until
        that slot is sampled into again); with whole dense tensors, one batched copy. Call it
        without gradient recording."""
        buffer, views = self._slot(slot)
        if self._whole and all(t is not None and not t.is_sparse for t in tensors):
            torch._foreach_copy_(views, tensors)
            return buffer
        return torch.cat(self._pieces(tensors), out=buffer)

    @torch.no_grad()
    def before_step(self) -> None:
        """Weights not yet updated: measure them, keep a sample. The gradients are read in
        :meth:`after_step`: an ``optimizer.step(closure)`` (Lightning, LBFGS) computes them
        after this pre-hook, and the update leaves them as the optimizer used them."""
        self._before = _Before(weight_norms=self._norms(self._params),
                               weight_sample=self._sample(self._params, WEIGHT_SLOT))

    @torch.no_grad()
    def after_step(self) -> torch.Tensor | None:
        """The step's telemetry vector (see class docstring), or None without gradients."""
        before, self._before = self._before, None
        if before is None:
            return None
        grads = [_dense(p.grad) for p in self._params]
        present = [i for i, g in enumerate(grads) if g is not None]
        if not present:
            return None
        owners = self._owners if len(present) == len(grads) else self._owners_of(present)
        grad_norms = self._norms([grads[i] for i in present])
        self._grad_slot = GRAD_SLOTS[0] + GRAD_SLOTS[1] - self._grad_slot  # keep the previous
        grad_sample = self._sample([p.grad for p in self._params], self._grad_slot)
        unclipped = self.clip.take()
        old = self._slot(WEIGHT_SLOT)[1]
        # Unsampled (stride 1), the sample is the weights: their norms are known.
        size = before.weight_norms if self._stride == 1 else self._norms(old)
        torch._foreach_sub_(old, self._params if self._whole  # the update, in place
                            else self._pieces(self._params))
        moved = self._norms(old)
        # One reduction per layer for the weights, the update, the sampled weights and, when
        # every parameter has a gradient (no layer left without), the gradients.
        rows = [before.weight_norms, moved, size] + ([grad_norms] if owners is self._owners
                                                     else [])
        weight, moved, size, *grads_per_layer = self._layer_squares(
            torch.stack(rows), self._owners).sqrt_().unbind()
        nan = torch.full((), math.nan, device=self.device)
        layer_ratio = torch.where(size > 0, moved / size, nan)
        old_norm = size.square().sum().sqrt()
        ratio = torch.where(old_norm > 0, moved.square().sum().sqrt() / old_norm, nan)
        # The cosine as F.cosine_similarity defines it (norms' product clamped at COS_EPS),
        # from one dot product and the norms: a third of its cost on a large sample.
        sample_norm = torch.linalg.vector_norm(grad_sample)
        previous, self._previous_grad = self._previous_grad, (grad_sample, sample_norm)
        cosine = (torch.dot(grad_sample, previous[0]) / (sample_norm * previous[1]).clamp_min(
            COS_EPS) if previous is not None else nan)
        head = {GRAD_NORM.name: torch.linalg.vector_norm(grad_norms), GRAD_COS.name: cosine,
                UPDATE_RATIO.name: ratio}
        per_layer = {LAYER_GRAD_NORM.name: (grads_per_layer[0] if grads_per_layer
                                             else self._per_layer(grad_norms, owners)),
                     WEIGHT_NORM.name: weight, LAYER_UPDATE_RATIO.name: layer_ratio}
        unclipped = unclipped if unclipped is not None else nan
        return torch.cat([torch.stack([head[name] for name in TELEMETRY_SCALARS])]
                         + [per_layer[name] for name in LAYER_STATS]
                         + [unclipped.to(self.device).reshape(1)])

    def unpack(self, values: Sequence[float]) -> tuple[dict[str, float], np.ndarray]:
        """(scalars, per-layer float32 [L, len(LAYER_STATS)]) from an :meth:`after_step` vector;
        the scalars add NONFINITE_GRAD, derived here from the gradient norm, and on clipped
        steps GRAD_NORM_CLIPPED (GRAD_NORM being the norm before clipping)."""
        head = len(TELEMETRY_SCALARS)
        scalars = dict(zip(TELEMETRY_SCALARS, values[:head]))
        unclipped = values[-1]
        if not math.isnan(unclipped):
            scalars[GRAD_NORM_CLIPPED] = scalars[GRAD_NORM.name]
            scalars[GRAD_NORM.name] = unclipped
        scalars[NONFINITE_GRAD.name] = 0.0 if math.isfinite(scalars[GRAD_NORM.name]) else 1.0
        layers = np.asarray(values[head:-1], dtype=np.float32).reshape(
            len(LAYER_STATS), len(self.layers)).T
        return scalars, np.ascontiguousarray(layers)
