"""Gradient and weight telemetry of an optimizer step, reduced on the parameters' device.

:class:`ParamTelemetry` gives the global and per-layer gradient norm, the per-layer weight norm,
the update-to-weight ratio and the cosine between this telemetry step's gradient and the
previous one's (both from a strided sample of at most about ``SAMPLE_LIMIT`` elements, so
memory stays bounded on large models), and the gradient norm before any clipping
(:mod:`sentrycam.capture.clipping`). Per-layer telemetry is per module that owns parameters
directly (``model.named_modules()`` names; ``"(model)"`` for parameters of the model itself).
The step hooks that call it live in :mod:`sentrycam.capture.telemetry`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from sentrycam.capture.clipping import ClipWatch
from sentrycam.capture.layers import ROOT_NAME
from sentrycam.protocol.signals import (GRAD_COS, GRAD_NORM, GRAD_NORM_CLIPPED, LAYER_GRAD_NORM,
                                        LAYER_UPDATE_RATIO, NONFINITE_GRAD, PARAMETER_STATS,
                                        TELEMETRY_SCALARS, UPDATE_RATIO, WEIGHT_NORM)

#: Per-layer statistics of the parameter telemetry, in packing order (from the registry).
LAYER_STATS = PARAMETER_STATS
SAMPLE_LIMIT = 1_000_000
COS_EPS = 1e-8
#: Sample buffers of :class:`ParamTelemetry`: the weights, and two for the gradients.
WEIGHT_SLOT, GRAD_SLOTS = 0, (1, 2)
#: Rows of per-tensor norms reduced per layer at once: the weights, the update, the gradients
#: and the sampled weights (the last two only where needed).
ROWS = 4


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
        #: per-tensor norms float32 [ROWS, P] written in place (see after_step), its rows [P]
        #: and its first K rows at [K]; views made once, as each costs a call into torch.
        norm_rows = torch.empty(ROWS, len(self._params), device=self.device)
        self._row_views = norm_rows.unbind()
        self._first_rows = [norm_rows[:k] for k in range(ROWS + 1)]
        zeros = torch.zeros(ROWS, len(self.layers), device=self.device)  # never written to
        self._zero_squares = [zeros[:k] for k in range(ROWS + 1)]
        self._nan = torch.full((), math.nan, device=self.device)  # never written to
        self._nan_row = self._nan.reshape(1)
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

    def _norms(self, tensors: Sequence[torch.Tensor], row: int | None = None) -> torch.Tensor:
        """Per-tensor 2-norms, float32 [len(tensors)], in one batched reduction; written into
        norm row ``row`` (one per parameter, returned) unless None."""
        norms = torch._foreach_norm(list(tensors), 2, dtype=torch.float32)
        out = None if row is None else self._row_views[row]
        if self._uniform:
            return torch.stack(norms, out=out)
        return torch.stack([n.to(self.device) for n in norms], out=out)

    def _layer_squares(self, norms: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Summed squares per layer of per-tensor norms: float32 [K, P] -> [K, L], K <= ROWS
        (added to zeros in ``owners`` order, as ``index_add_`` on a fresh zero tensor)."""
        return torch.index_add(self._zero_squares[norms.shape[0]], 1, owners, norms.square())

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
        self._before = _Before(weight_norms=self._norms(self._params, row=0),
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
        # Rows of per-tensor norms (_row_views): 0 the weights (before_step), 1 the update,
        # 2 the gradients when every parameter has one (no layer left without), then the
        # sampled weights unless the sample is the weights (stride 1: their norms are known).
        rows = 3 if owners is self._owners else 2
        grad_norms = self._norms([grads[i] for i in present], 2 if rows == 3 else None)
        self._grad_slot = GRAD_SLOTS[0] + GRAD_SLOTS[1] - self._grad_slot  # keep the previous
        grad_sample = self._sample([p.grad for p in self._params], self._grad_slot)
        unclipped = self.clip.take()
        old = self._slot(WEIGHT_SLOT)[1]
        if self._stride > 1:
            self._norms(old, row=rows)
            rows += 1
        torch._foreach_sub_(old, self._params if self._whole  # the update, in place
                            else self._pieces(self._params))
        self._norms(old, row=1)
        # One reduction per layer for all rows.
        weight, moved, *more = self._layer_squares(
            self._first_rows[rows], self._owners).sqrt_().unbind()
        size = more.pop() if self._stride > 1 else weight
        nan = self._nan
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
        per_layer = {LAYER_GRAD_NORM.name: (more[0] if more
                                             else self._per_layer(grad_norms, owners)),
                     WEIGHT_NORM.name: weight, LAYER_UPDATE_RATIO.name: layer_ratio}
        return torch.cat([torch.stack([head[name] for name in TELEMETRY_SCALARS])]
                         + [per_layer[name] for name in LAYER_STATS]
                         + [self._nan_row if unclipped is None
                            else unclipped.to(self.device).reshape(1)])

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
