"""The gradient norm before clipping, which the optimizer's hooks cannot see.

By the optimizer's pre-hook, ``clip_grad_norm_`` has already scaled the gradients. While a
:class:`ClipWatch` is open, ``torch.nn.utils.clip_grad_norm_`` (which Lightning and Hugging Face
Accelerate call as well) is a wrapper that calls torch's own function and hands each open watch
the total norm that function returns: the norm before clipping, a 0-d tensor kept on its device
(reading it would wait for the device). The original is put back when the last watch closes.
Code that bound the function before the watch opened (``from torch.nn.utils import
clip_grad_norm_`` at import time) calls torch's original: its steps record the clipped norm only.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Iterable

import torch
from torch import nn

#: Open watches; the wrapper is installed exactly while this is non-empty.
_OPEN: set[ClipWatch] = set()
_ORIGINAL: list[Any] = []  # torch's function while the wrapper is installed


def _clip_grad_norm_(parameters: Any, max_norm: float, *args: Any, **kwargs: Any
                     ) -> torch.Tensor:
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    parameters = list(parameters)  # a generator would be spent by torch's own call
    total = _ORIGINAL[0](parameters, max_norm, *args, **kwargs)
    for watch in tuple(_OPEN):
        watch.clipped(parameters, total)
    return total


class ClipWatch:
    """Notes the pre-clipping gradient norm of clip calls on the given parameters.

    :meth:`take` returns it only while the gradients are those that were clipped (the same
    gradient tensor, not modified since): a clip call of an earlier step is never reported.
    When several clip calls precede one step, the last one counts.
    """

    def __init__(self, params: Iterable[nn.Parameter]) -> None:
        self._param_ids = frozenset(id(p) for p in params)
        self._latest: tuple[torch.Tensor, weakref.ref, int] | None = None

    def open(self) -> None:
        if not _OPEN:
            _ORIGINAL.append(torch.nn.utils.clip_grad_norm_)
            torch.nn.utils.clip_grad_norm_ = functools.wraps(_ORIGINAL[0])(_clip_grad_norm_)
        _OPEN.add(self)

    def close(self) -> None:
        _OPEN.discard(self)
        self._latest = None
        if not _OPEN and _ORIGINAL:
            torch.nn.utils.clip_grad_norm_ = _ORIGINAL.pop()

    def clipped(self, parameters: list[Any], total: torch.Tensor) -> None:
        """A clip call returned ``total`` (the norm before clipping) for ``parameters``."""
        grad = next((p.grad for p in parameters
                     if id(p) in self._param_ids and p.grad is not None), None)
        if grad is not None and isinstance(total, torch.Tensor):
            self._latest = (total.detach(), weakref.ref(grad), grad._version)

    def take(self) -> torch.Tensor | None:
        """The pre-clipping norm (float32 0-d, on its device) of the gradients as they are now,
        or None when they were not clipped since they last changed."""
        latest, self._latest = self._latest, None
        if latest is None:
            return None
        total, ref, version = latest
        grad = ref()
        if grad is None or grad._version != version:
            return None
        return total.float()
