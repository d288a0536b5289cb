"""Each optimizer step's messages, built with at most one device-to-host copy per step.

:class:`StepReporter` turns a step into a Scalars message (loss, learning rates, and at
telemetry steps the gradient scalars) plus LayerStats messages (parameter-layer telemetry,
activation statistics). :class:`HostStager` brings the step's device values to the host: at
once on CPU; on CUDA through a non-blocking copy into pinned memory read at the next step, so
no hook waits on the GPU. :func:`nonfinite_counts` says what NaN/Inf a message reports.
"""

from __future__ import annotations

import math
import numbers
import time
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from sentrycam.capture.activations import STAT_NAMES
from sentrycam.capture.messages import LayerStats, Message, Scalars, Snapshot
from sentrycam.capture.telemetry import LAYER_STATS, LossWatch, ParamTelemetry, learning_rates


class HostStager:
    """Copies one float32 vector per step to the host without a sync inside a hook.

    :meth:`push` returns the ``(meta, values)`` pairs that are ready: on CPU the one just pushed;
    on CUDA the previous step's (its non-blocking copy into pinned memory has finished by then),
    while the new one stays pending until the next push or :meth:`drain`.
    """

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None
        self._event: Any = None
        self._pending: tuple[Any, int] | None = None

    @property
    def pending(self) -> bool:
        """True while a pushed vector waits for :meth:`drain`."""
        return self._pending is not None

    def push(self, parts: list[torch.Tensor], meta: Any) -> list[tuple[Any, list[float]]]:
        ready = self.drain()
        vector = parts[0].reshape(-1) if len(parts) == 1 else torch.cat(
            [p.reshape(-1) for p in parts])
        if vector.device.type != "cuda":
            ready.append((meta, vector.tolist()))
            return ready
        n = vector.numel()
        if self._buffer is None or self._buffer.numel() < n:
            self._buffer = torch.empty(max(n, 256), pin_memory=True)
            self._event = torch.cuda.Event()
        self._buffer[:n].copy_(vector, non_blocking=True)
        self._event.record()
        self._pending = (meta, n)
        return ready

    def drain(self) -> list[tuple[Any, list[float]]]:
        """The pending vector, waiting for its copy if needed (empty list if none)."""
        if self._pending is None:
            return []
        (meta, n), self._pending = self._pending, None
        self._event.synchronize()
        return [(meta, self._buffer[:n].tolist())]


class _StepValues(NamedTuple):
    """One step's messages waiting for their device values."""

    step: int
    wall_time: float
    scalars: dict[str, float]  # already on the host (learning rates)
    staged: tuple[str, ...]  # scalar names at the head of the staged vector ("loss")
    telemetry: bool
    stats_layers: tuple[str, ...]


#: Plain CPU steps are reported in batches: at most this many steps, or this many seconds, late.
BATCH_STEPS = 16
BATCH_SECONDS = 1.0


class StepReporter:
    """Each optimizer step's messages, with at most one host transfer per step: Scalars every
    step (loss, learning rates; grad_norm, grad_cos, update_ratio and nonfinite_grad at
    telemetry steps), LayerStats of the parameter layers at telemetry steps, and LayerStats of
    the activation statistics handed in.

    On CUDA a step's messages come out one step later (see :class:`HostStager`). On CPU the
    messages of plain steps (no telemetry, no statistics) are held and sent together every
    ``BATCH_STEPS`` steps or ``BATCH_SECONDS``, whichever comes first: building and queueing a
    message right after the backward pass, with the CPU caches full of training data, costs
    several times what it costs in a burst, and this is the path every step pays.
    """

    def __init__(self, run_id: str, model: nn.Module, loss: LossWatch | None) -> None:
        self.run_id, self.loss = run_id, loss
        self.telemetry = ParamTelemetry(model)
        self.telemetry_due = False  # before_step ran; after_step completes the telemetry step
        self.telemetry_seconds = 0.0  # cost of the last telemetry step, both hooks
        self.telemetry_post_seconds = 0.0  # the part of it spent in after_step
        self._stager = HostStager()
        self._batch: list[tuple[int, float, dict[str, float]]] = []

    def before_step(self) -> None:
        """Call in the optimizer pre-hook of a telemetry step."""
        start = time.perf_counter()
        self.telemetry.before_step()
        self.telemetry_due = True
        self.telemetry_seconds = time.perf_counter() - start

    def after_step(self, optimizer: Any, step: int,
                   stats: Sequence[tuple[str, torch.Tensor]] = ()) -> list[Message]:
        """Messages ready now. ``stats``: (layer, float32 [len(STAT_NAMES)]) on the device."""
        loss = self.loss.take() if self.loss is not None else None
        if not (stats or self.telemetry_due or self._stager.pending) and (
                loss is None or not loss.is_cuda):
            # The always-on path: nothing to reduce, nothing to wait for.
            values = learning_rates(optimizer)
            if loss is not None:
                values["loss"] = loss.item() if loss.ndim == 0 else LossWatch.scalar(loss).item()
            now = time.time()
            self._batch.append((step, now, values))
            if len(self._batch) < BATCH_STEPS and now - self._batch[0][1] < BATCH_SECONDS:
                return []
            return self.release_batch()
        ready = self.release_batch()
        parts = [LossWatch.scalar(loss)] if loss is not None else []
        vector = None
        if self.telemetry_due:
            start, self.telemetry_due = time.perf_counter(), False
            vector = self.telemetry.after_step()
            self.telemetry_post_seconds = time.perf_counter() - start
            self.telemetry_seconds += self.telemetry_post_seconds
            if vector is not None:
                parts.append(vector)
        if stats:
            parts.append(torch.stack([row for _, row in stats]).reshape(-1))
        meta = _StepValues(step, time.time(), learning_rates(optimizer),
                           ("loss",) if loss is not None else (), vector is not None,
                           tuple(name for name, _ in stats))
        staged = (self._stager.push(parts, meta) if parts
                  else self._stager.drain() + [(meta, [])])
        return ready + [m for meta, values in staged for m in self._messages(meta, values)]

    def flush(self) -> list[Message]:
        """Messages of steps still held: a batch, or a step waiting for its device copy."""
        held = self.release_batch()
        return held + [m for meta, values in self._stager.drain()
                       for m in self._messages(meta, values)]

    def release_batch(self) -> list[Message]:
        """The Scalars of the plain CPU steps held so far."""
        batch, self._batch = self._batch, []
        return [Scalars(run_id=self.run_id, step=step, wall_time=wall, values=values)
                for step, wall, values in batch]

    def _messages(self, meta: _StepValues, values: list[float]) -> list[Message]:
        scalars = dict(meta.scalars)
        scalars.update(zip(meta.staged, values))
        position, found = len(meta.staged), []
        if meta.telemetry:
            size = self.telemetry.vector_size
            telemetry, per_layer = self.telemetry.unpack(values[position:position + size])
            position += size
            scalars.update(telemetry)
            found.append(LayerStats(run_id=self.run_id, step=meta.step,
                                    layers=tuple(self.telemetry.layers), stats=LAYER_STATS,
                                    values=per_layer))
        if meta.stats_layers:
            matrix = np.asarray(values[position:], dtype=np.float32).reshape(
                len(meta.stats_layers), len(STAT_NAMES))
            found.append(LayerStats(run_id=self.run_id, step=meta.step, layers=meta.stats_layers,
                                    stats=STAT_NAMES, values=matrix))
        found.append(Scalars(run_id=self.run_id, step=meta.step, wall_time=meta.wall_time,
                             values=scalars))
        return found


_NOTHING: dict[str, int] = {}


def nonfinite_counts(message: Message) -> dict[str, int]:
    """NaN/Inf a message reports: ``{"loss": 1}``, ``{"gradients": 1}`` or ``{layer: count}``."""
    if isinstance(message, Scalars):
        values = message.values
        loss_ok = math.isfinite(values.get("loss", 0.0))
        if loss_ok and not values.get("nonfinite_grad"):
            return _NOTHING  # every step comes here: no allocation
        return {name: 1 for name, bad in (("loss", not loss_ok),
                                          ("gradients", bool(values.get("nonfinite_grad"))))
                if bad}
    if isinstance(message, LayerStats) and "nonfinite" in message.stats:
        column = message.values[:, message.stats.index("nonfinite")]
        return {name: int(count) for name, count in zip(message.layers, column) if count > 0}
    if isinstance(message, Snapshot):
        return {name: count for name, count in message.nonfinite.items() if count}
    return {}


def logged_value(key: str, value: Any) -> float:
    """A value given to ``run.log(key=value)`` as a float; ValueError if it is not a number."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, numbers.Real):
        return float(value)
    raise ValueError(f"run.log({key}=...) needs a number, got {type(value).__name__}")
