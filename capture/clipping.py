"""The gradient norm before clipping, which the optimizer's hooks cannot see.

By the optimizer's pre-hook, ``clip_grad_norm_`` / ``clip_grad_value_`` (or any in-place change
of the gradients) has already altered them. A :class:`ClipWatch` therefore measures the
gradients as each backward pass leaves them: the parameters' post-accumulate-grad hooks tell it
a backward pass produced gradients, and a callback queued on that pass (run when it ends, after
the callbacks queued during it, e.g. DDP's averaging across ranks) takes their norms and in-place
version counters. With gradient accumulation the last backward pass before a step counts.
Nothing in torch is replaced (a clip function imported by name before attaching is seen too);
:meth:`ClipWatch.close` removes the hooks.

A gradient scaler's ``unscale_`` leaves the version counters as they are, so on its own it does
not count as clipping. When a step is unscaled *and* clipped, the norm noted at the end of
backward is the scaled one: the ``GradScaler`` whose ``step`` calls the optimizer (found on the
call stack, as neither torch nor the optimizer keeps a link to it) gives the scale to divide by.
"""

from __future__ import annotations

import functools
import logging
import sys
import weakref
from typing import Callable, Sequence

import torch
from torch import nn
from torch.autograd import Variable

log = logging.getLogger(__name__)


def _queue_at_end_of_backward(callback) -> None:
    # torch's engine runs these once the running backward pass has finished (DDP and FSDP
    # use the same mechanism); one queued from such a callback runs after those already queued.
    Variable._execution_engine.queue_callback(callback)


#: Hooks stay armed while the next watched step is at most this many steps away: arming and
#: removing them once (plus a full step) costs about what the hooks' calls in that many
#: backward passes cost (see :meth:`ClipWatch.plan`).
ARM_AHEAD = 4
#: How many frames above the optimizer pre-hook to look for the GradScaler's ``step``: the
#: optimizer's step wrappers and hooks, the scaler's ``_maybe_opt_step`` and this package's own.
SCALER_SEARCH_DEPTH = 24


def running_loss_scale() -> torch.Tensor | None:
    """The loss scale (float32 [1], on its device) of the enabled ``torch.amp.GradScaler`` whose
    ``step`` is running further up the call stack, or None. Call it from an optimizer hook."""
    frame = sys._getframe(1)
    for _ in range(SCALER_SEARCH_DEPTH):
        if frame is None:
            return None
        owner = frame.f_locals.get("self") if frame.f_code.co_name == "step" else None
        if isinstance(owner, torch.amp.GradScaler):
            return owner._scale if owner.is_enabled() else None
        frame = frame.f_back
    return None


class ClipWatch:
    """Notes a backward pass's gradient norms, so that :meth:`take`, in the optimizer
    pre-hook, can tell the norm before any in-place clipping of this step.

    ``due()``, asked as each backward pass ends, says whether the coming optimizer step is one
    whose telemetry is taken (the controller samples steps): only then are the norms noted, at
    the cost of one batched norm over the gradients (device kernels, no sync); other passes
    cost a queued callback and that question. Without ``due`` (None) every pass is noted. The
    owner may set :attr:`due` after construction.
    """

    def __init__(self, params: Sequence[nn.Parameter],
                 due: Callable[[], bool] | None = None) -> None:
        self.due = due
        self._params = list(params)
        self._queued = False  # a backward pass is running and its note is queued
        #: Per parameter after the last backward pass: None without a gradient, else
        #: (float32 0-d norm on the gradient's device, the gradient (weakly), its _version).
        self._seen: list[tuple[torch.Tensor, weakref.ref, int] | None] | None = None
        self._handles: list = []
        self._closed = False
        self.arm()

    def arm(self) -> None:
        """Hook the parameters (done at construction): backward passes are noted again."""
        if not self._handles and not self._closed:
            self._handles = [p.register_post_accumulate_grad_hook(self._on_gradient)
                             for p in self._params if p.requires_grad]

    @property
    def armed(self) -> bool:
        """True while the parameters are hooked."""
        return bool(self._handles)

    def disarm(self) -> None:
        """Remove the hooks until :meth:`arm`: backward passes go unseen and cost nothing."""
        while self._handles:
            self._handles.pop().remove()
        self._seen = None

    def close(self) -> None:
        """Remove the hooks for good."""
        self._closed = True
        self.disarm()

    def plan(self, step: int, due: int, until: int) -> int:
        """Between steps: whether the hooks stay on until the next full step. Every backward
        pass calls them once per parameter, so when the next step whose ``due`` answers True is
        more than :data:`ARM_AHEAD` steps after ``step`` they go, and the step before it must be
        a full one, which arms them. Returns ``until`` (the first step that is not quiet),
        brought forward to ``due - 1`` in that case."""
        if due - step > ARM_AHEAD:
            self.disarm()
            return min(until, due - 1)
        self.arm()
        return until

    def _on_gradient(self, param: torch.Tensor) -> None:
        # Runs inside backward for every parameter: one comparison after the first.
        if not self._queued:
            self._queued = True
            _queue_at_end_of_backward(
                functools.partial(_queue_at_end_of_backward, self._note))

    def _note(self) -> None:
        self._queued = False
        if not self._handles:  # closed while the pass ran
            return
        try:
            if self.due is not None and not self.due():
                self._seen = None  # an earlier pass's note must not pass for this one's
                return
            grads = [p.grad for p in self._params]
            present = [g for g in grads if g is not None]
            with torch.no_grad():
                norms = iter(torch._foreach_norm(
                    [g.coalesce().values() if g.is_sparse else g for g in present],
                    2, dtype=torch.float32))
            self._seen = [None if g is None else (next(norms), weakref.ref(g), g._version)
                          for g in grads]
        except Exception:  # never break the user's backward pass
            log.exception("noting the gradient norms failed; clipping goes unseen this step")
            self._seen = None

    def take(self) -> torch.Tensor | None:
        """The gradients' total norm after the last backward pass (float32 0-d, on the first
        gradient's device) when they changed in place since, i.e. were clipped; None when
        they did not, or were not all noted. Forgets the note: a later step never reports it."""
        seen, self._seen = self._seen, None
        if seen is None:
            return None
        changed = False
        norms = []
        for param, entry in zip(self._params, seen):
            grad = param.grad
            if grad is None:
                continue
            if entry is None:
                return None  # a gradient backward did not leave: cannot tell
            norm, ref, version = entry
            changed = changed or ref() is not grad or grad._version != version
            norms.append(norm)
        if not changed:
            return None
        device = norms[0].device
        total = torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))
        scale = running_loss_scale()  # backward's gradients were scaled, these are not
        return total if scale is None else total / scale.to(device).reshape(())
