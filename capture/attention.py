"""Per-head attention statistics of the probe pass, where the model exposes its attention.

During a snapshot's probe pass only, a forward hook on every ``nn.MultiheadAttention`` (also
the ones inside ``nn.TransformerEncoderLayer`` / ``DecoderLayer``) calls the module's own
``forward`` again on the hook's inputs, with ``need_weights=True`` and per-head weights: the
attention weights are then exactly the ones the module computes (its projections at the
snapshot's frozen weights, every mask argument honoured, bias_k/add_zero_attn included).
The fused fast path of the encoder layers skips the attention module's forward, so it is
turned off while the probe runs (``torch.backends.mha``), and put back after. Hugging Face
attention modules return their weights themselves when the model runs the ``eager``
attention implementation; a hook reads them there (``sdpa`` computes none: no statistics).
Nothing of the user's model is patched, and training never runs these hooks.

Per head, over every probe sample and every query token (rows whose weights are not finite, a
query with every key masked, are left out):

- ``attn_entropy``: mean entropy of the query's attention distribution over keys, in nats
  (0: all weight on one key; log(keys) when uniform);
- ``attn_max``: mean of the largest weight of the row (1: one key takes everything);
- ``attn_agreement``: mean over the other heads of 1 - total variation distance between the
  two heads' rows (1: the heads attend alike; NaN for a single head).

They travel as one ``LayerStats`` message at the snapshot's step, one row per head, the layer
named ``<module>:head<h>`` (:func:`head_layer`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from sentrycam.protocol.messages import LayerStats
from sentrycam.protocol.signals import ATTENTION_STATS

log = logging.getLogger(__name__)

#: Elements of the per-call weight products ([B, H, H, L, S] for the head agreement) computed
#: at once; a larger probe chunk is cut along the batch (a few tens of MiB of float32).
MAX_ELEMENTS = 2**23


def head_layer(module_name: str, head: int) -> str:
    """The layer name of one attention head in LayerStats (``"encoder.self_attn:head0"``)."""
    return f"{module_name}:head{head}"


@dataclass
class HeadSums:
    """Running sums over the rows (query tokens of probe samples) of one attention module:
    float64 [H] each, and the number of rows summed."""

    entropy: torch.Tensor
    top: torch.Tensor
    agreement: torch.Tensor
    rows: int = 0

    @classmethod
    def zeros(cls, heads: int) -> HeadSums:
        return cls(*(torch.zeros(heads, dtype=torch.float64) for _ in range(3)))

    def add(self, weights: torch.Tensor) -> None:
        """Add the rows of ``weights`` float [B, H, L, S] (each row sums to 1 over S)."""
        weights = weights.double()
        valid = torch.isfinite(weights).all(dim=3).all(dim=1)  # [B, L]: every head finite
        if not bool(valid.any()):
            return
        rows = weights.permute(0, 2, 1, 3)[valid]  # [R, H, S]
        heads = rows.shape[1]
        self.entropy += -torch.special.xlogy(rows, rows).sum(2).sum(0).cpu()
        self.top += rows.amax(2).sum(0).cpu()
        if heads > 1:
            distance = 0.5 * (rows[:, :, None] - rows[:, None]).abs().sum(3)  # [R, H, H]
            similar = (1.0 - distance).sum(2) - 1.0  # the head itself scores exactly 1
            self.agreement += (similar / (heads - 1)).sum(0).cpu()
        else:
            self.agreement += torch.nan
        self.rows += int(rows.shape[0])

    def means(self) -> np.ndarray:
        """float32 [H, len(ATTENTION_STATS)]: the means of the sums, NaN without rows."""
        if self.rows == 0:
            return np.full((len(self.entropy), len(ATTENTION_STATS)), np.nan, np.float32)
        columns = {"attn_entropy": self.entropy, "attn_max": self.top,
                   "attn_agreement": self.agreement}
        stacked = torch.stack([columns[name] for name in ATTENTION_STATS], dim=1)
        return (stacked / self.rows).numpy().astype(np.float32)


#: Module name -> its sums over a snapshot's probe pass.
AttentionTotals = dict[str, HeadSums]


def attention_stats(run_id: str, step: int, totals: AttentionTotals) -> LayerStats | None:
    """The LayerStats of one snapshot's attention (one row per head), or None when no
    attention module ran."""
    ran = {name: sums for name, sums in totals.items() if sums.rows > 0}
    if not ran:
        return None
    layers = tuple(head_layer(name, h) for name, sums in ran.items()
                   for h in range(len(sums.entropy)))
    values = np.concatenate([sums.means() for sums in ran.values()])
    return LayerStats(run_id=run_id, step=step, layers=layers, stats=ATTENTION_STATS,
                      values=values)


class AttentionRecorder:
    """The attention modules of a model, and the hooks that measure them: every
    ``nn.MultiheadAttention``, and every innermost module whose class name ends in
    ``Attention`` (Hugging Face's self-attention modules, which return their weights)."""

    def __init__(self, model: nn.Module) -> None:
        named = list(model.named_modules())
        self.modules = [(name, module) for name, module in named
                        if isinstance(module, nn.MultiheadAttention) or _returns_weights(module)]
        self.failed: set[str] = set()  # modules whose weights could not be read

    @contextlib.contextmanager
    def recording(self, totals: AttentionTotals) -> Iterator[None]:
        """While inside, every forward of an attention module adds its weights to
        ``totals``; nothing is registered for a model without attention modules."""
        if not self.modules:
            yield
            return
        fast = torch.backends.mha.get_fastpath_enabled()
        handles = [module.register_forward_hook(self._hook(name, totals), with_kwargs=True)
                   for name, module in self.modules if name not in self.failed]
        # The fused encoder-layer fast path would skip nn.MultiheadAttention's forward.
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            yield
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)
            for handle in handles:
                handle.remove()

    def _hook(self, name: str, totals: AttentionTotals) -> Any:
        def measure(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if name in self.failed:
                return
            try:
                found = (head_weights(module, args, kwargs)
                         if isinstance(module, nn.MultiheadAttention) else returned_weights(output))
                for weights in found:
                    sums = totals.get(name) or totals.setdefault(
                        name, HeadSums.zeros(weights.shape[1]))
                    sums.add(weights)
            except Exception:  # another forward than expected: the probe itself goes on
                log.warning("sentrycam: no attention statistics for %s (its attention weights "
                            "could not be read)", name, exc_info=True)
                self.failed.add(name)
                totals.pop(name, None)
        return measure


def _returns_weights(module: nn.Module) -> bool:
    """An innermost module named ``*Attention`` (no such module inside it): in Hugging Face
    models, the one whose forward returns ``(output, weights [B, H, L, S])``."""
    def named_attention(m: nn.Module) -> bool:
        return type(m).__name__.endswith("Attention") or isinstance(m, nn.MultiheadAttention)
    return named_attention(module) and not any(
        named_attention(m) for m in module.modules() if m is not module)


def returned_weights(output: Any) -> Iterator[torch.Tensor]:
    """The attention weights float [B, H, L, S] a module returned as the second item of its
    output (Hugging Face's eager attention); nothing when it returned none (``sdpa`` and the
    other fused implementations compute no weights). ValueError when that item is not a
    distribution over keys."""
    weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
    if not isinstance(weights, torch.Tensor) or weights.dim() != 4:
        return
    sums = weights.detach().float().sum(-1)
    finite = torch.isfinite(sums)
    if not torch.allclose(sums[finite], torch.ones_like(sums[finite]), atol=1e-3):
        raise ValueError(f"the second output {tuple(weights.shape)} is not attention weights")
    yield weights.detach()


def head_weights(module: nn.MultiheadAttention, args: tuple, kwargs: dict
                 ) -> Iterator[torch.Tensor]:
    """The per-head attention weights float [b, H, L, S] of the call ``module(*args,
    **kwargs)``, recomputed by the module's own forward in batch slices of at most
    ``MAX_ELEMENTS`` products."""
    call = inspect.signature(module.forward).bind(*args, **kwargs).arguments
    call.update(need_weights=True, average_attn_weights=False)
    query = call["query"]
    if query.dim() == 2:  # unbatched: weights [H, L, S]
        yield module.forward(**call)[1].unsqueeze(0)
        return
    batch_dim = 0 if module.batch_first else 1
    batch, length = query.shape[batch_dim], query.shape[1 - batch_dim]
    keys = call["key"].shape[1 - batch_dim] + 2  # bias_k and a zero key may come on top
    per_sample = module.num_heads ** 2 * length * keys
    size = max(1, MAX_ELEMENTS // per_sample)
    for start in range(0, batch, size):
        stop = min(start + size, batch)
        part = dict(call) if (start, stop) == (0, batch) else _batch_slice(
            call, batch_dim, start, stop, batch)
        yield module.forward(**part)[1]


def _batch_slice(call: dict[str, Any], batch_dim: int, start: int, stop: int, batch: int
                 ) -> dict[str, Any]:
    """The call's arguments for samples ``start:stop`` of ``batch``: the inputs along their
    batch dimension, the key padding mask [B, S] by row, a per-sample attention mask
    [B * H, L, S] by its blocks of H; a shared [L, S] mask as it is."""
    part = dict(call)
    for key in ("query", "key", "value"):
        part[key] = call[key].narrow(batch_dim, start, stop - start)
    padding = call.get("key_padding_mask")
    if padding is not None:
        part["key_padding_mask"] = padding[start:stop]
    mask = call.get("attn_mask")
    if mask is not None and mask.dim() == 3:
        heads = mask.shape[0] // batch
        part["attn_mask"] = mask[start * heads:stop * heads]
    return part
