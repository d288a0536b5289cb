"""Per-layer activation statistics of one training batch, reduced on the tensor's device.

:func:`activation_stats` returns a float32 vector in ``STAT_NAMES`` order (the signal
registry's packing order of activation statistics, :mod:`sentrycam.protocol.signals`) without
any host transfer; the run copies the vectors of all layers to the host in one go at the step
boundary.

- ``act_mean``, ``act_std``: over every finite value of the layer's tensor.
- ``dead_frac``: fraction of units (channels, or features of a token/flat layer) that are never
  > 0 anywhere in the batch: dead ReLU units when read on pre-activations.
- ``sat_frac``: for modules with bounded outputs (Tanh, Sigmoid, Softsign, Hardtanh and ReLU6),
  the fraction of values within 1% of a bound (1% of the larger bound's magnitude). For any other
  layer, the fraction of values with ``|x| > 3``: read as a pre-activation, that is where tanh's
  derivative drops below 1% (tanh'(3) = 0.0099), i.e. where a saturating nonlinearity would stop
  passing gradient.
- ``eff_rank``: exp of the entropy of the normalised singular values of the centred [B, C]
  matrix of pooled features (1 for rank one, C for a perfectly spread batch; 0 for a constant):
  the registry's EFF_RANK definition, which the backend's geometry computes on probe features
  (``sentrycam.backend.geometry.effective_rank``; a test checks both agree).
- ``nonfinite``: count of NaN/Inf values (the other statistics skip them).
"""

from __future__ import annotations

import torch
from torch import nn

from sentrycam.protocol.signals import (ACT_MEAN, ACT_STD, ACTIVATION_STATS, DEAD_FRAC, EFF_RANK,
                                        NONFINITE, SAT_FRAC)

#: The statistics :func:`activation_stats` packs, in order (from the registry).
STAT_NAMES = ACTIVATION_STATS
#: |x| above which a tanh-like nonlinearity has derivative < 1% (see module docstring).
SATURATION_LEVEL = 3.0
#: A bounded output is saturated within this fraction of its bound's magnitude.
SATURATION_MARGIN = 0.01


def saturation_bounds(module: nn.Module) -> tuple[float, float] | None:
    """(low, high) output bounds of a saturating activation module, else None."""
    if isinstance(module, (nn.Tanh, nn.Softsign)):
        return (-1.0, 1.0)
    if isinstance(module, nn.Sigmoid):
        return (0.0, 1.0)
    if isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh
        return (float(module.min_val), float(module.max_val))
    return None


def effective_rank(pooled: torch.Tensor) -> torch.Tensor:
    """exp(entropy of normalised singular values) of the centred [B, C] matrix; 0-d float32."""
    x = torch.nan_to_num(pooled.float(), nan=0.0, posinf=0.0, neginf=0.0)
    x = x - x.mean(0, keepdim=True)
    singular = torch.linalg.svdvals(x)
    total = singular.sum()
    p = singular / total.clamp_min(torch.finfo(torch.float32).tiny)
    entropy = -torch.special.xlogy(p, p).sum()
    return torch.where(total > 0, entropy.exp(), torch.zeros_like(entropy))


def activation_stats(units: torch.Tensor, pooled: torch.Tensor,
                     bounds: tuple[float, float] | None, unit_dim: int = 1) -> torch.Tensor:
    """Statistics of one layer on one batch: float32 [len(STAT_NAMES)] on the input's device.

    ``units``: every value of the layer, its units (channels or features) along ``unit_dim``:
    the [M, C] unit matrix, or the layer's tensor as it is (e.g. [N, C, H, W] with
    ``unit_dim=1``, see :func:`sentrycam.capture.layers.unit_view`); ``pooled`` [B, C']: one row
    per sample.

    On the CPU, where reading a value costs no device sync, a tensor without NaN/Inf (its sum is
    finite) takes a fused path of four passes without copies; otherwise every statistic masks
    the non-finite values out.
    """
    x = units.float()
    unit_dim %= x.ndim
    if x.device.type == "cpu" and x.numel() > 1:
        total = x.sum()
        if torch.isfinite(total):
            return _finite_stats(x, total, pooled, bounds, unit_dim)
    return _masked_stats(x, pooled, bounds, tuple(d for d in range(x.ndim) if d != unit_dim))


def _saturated(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Nonzero, shaped as ``x``, where a value counts for SAT_FRAC (see the module docstring)."""
    if bounds is None:
        return x.abs().gt_(SATURATION_LEVEL)  # in place: one temporary, not two
    low, high = bounds
    margin = SATURATION_MARGIN * max(abs(low), abs(high))
    return (x <= low + margin) | (x >= high - margin)


def _packed(mean: torch.Tensor, std: torch.Tensor, dead: torch.Tensor, sat: torch.Tensor,
            pooled: torch.Tensor, nonfinite: torch.Tensor) -> torch.Tensor:
    values = {ACT_MEAN.name: mean, ACT_STD.name: std, DEAD_FRAC.name: dead,
              SAT_FRAC.name: sat, EFF_RANK.name: effective_rank(pooled),
              NONFINITE.name: nonfinite}
    return torch.stack([values[name].float() for name in STAT_NAMES])


def _finite_stats(x: torch.Tensor, total: torch.Tensor, pooled: torch.Tensor,
                  bounds: tuple[float, float] | None, unit_dim: int) -> torch.Tensor:
    """:func:`activation_stats` of a tensor with no NaN/Inf, ``total`` being its sum."""
    n = x.numel()
    # Each unit's largest value, the contiguous trailing axes reduced first (a reduction over
    # a strided set of axes at once runs several times slower).
    peak = x.flatten(unit_dim + 1).amax(-1) if unit_dim < x.ndim - 1 else x
    dead = (peak.reshape(-1, peak.shape[-1]).amax(0) <= 0).float().mean()
    sat = torch.count_nonzero(_saturated(x, bounds)).float() / n
    return _packed(total / n, torch.var(x).sqrt(), dead, sat, pooled,
                   torch.zeros((), device=x.device))


def _masked_stats(x: torch.Tensor, pooled: torch.Tensor, bounds: tuple[float, float] | None,
                  others: tuple[int, ...]) -> torch.Tensor:
    """:func:`activation_stats` skipping NaN/Inf values, without reading anything to the host."""
    finite = torch.isfinite(x)
    count = finite.sum()
    zero = torch.zeros((), device=x.device)
    clean = torch.where(finite, x, zero)
    n = count.clamp_min(1).float()
    mean = clean.sum() / n
    var = torch.where(finite, x - mean, zero).square().sum() / (n - 1).clamp_min(1)
    positive = torch.where(finite, x, torch.full((), float("-inf"), device=x.device)) > 0
    dead = (~positive.any(others)).float().mean()
    sat = (_saturated(x, bounds).bool() & finite).sum().float() / n
    return _packed(mean, var.sqrt(), dead, sat, pooled, (finite.numel() - count).float())
