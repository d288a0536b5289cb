"""Each optimizer step's messages, built with at most one device-to-host copy per step.

:class:`StepReporter` turns a step into a Scalars message (loss, learning rates, and at
telemetry steps the gradient scalars) plus LayerStats messages (parameter-layer telemetry,
activation statistics); plain steps held on CPU go out together as one ScalarSeries.
:class:`HostStager` brings the step's device values to the host: at once on CPU; on CUDA
through a non-blocking copy into pinned memory read at the next step, so no hook waits on the
GPU. :func:`nonfinite_counts` says what NaN/Inf a message reports.
"""

from __future__ import annotations

import math
import numbers
import time
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from sentrycam.capture.param_telemetry import ParamTelemetry
from sentrycam.capture.telemetry import LossWatch, learning_rates
from sentrycam.protocol.messages import LayerStats, Message, Scalars, ScalarSeries, Snapshot
from sentrycam.protocol.signals import (ACTIVATION_STATS, LOSS, LR, NONFINITE, NONFINITE_GRAD,
                                        PARAMETER_STATS)


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
BATCH_STEPS = 64
BATCH_SECONDS = 1.0


class StepReporter:
    """Each optimizer step's messages, with at most one host transfer per step: Scalars every
    step (loss, learning rates; grad_norm, grad_cos, update_ratio and nonfinite_grad at
    telemetry steps), LayerStats of the parameter layers at telemetry steps, and LayerStats of
    the activation statistics handed in.

    On CUDA a step's messages come out one step later (see :class:`HostStager`). On CPU the
    messages of plain steps (no telemetry, no statistics) are held and sent together every
    ``BATCH_STEPS`` steps or ``BATCH_SECONDS``, whichever comes first, as one ScalarSeries
    (one frame for the sender and one row batch for the server): building and queueing a
    message right after the backward pass, with the CPU caches full of training data, costs
    several times what it costs in a burst, and this is the path every step pays. A held step
    keeps only its loss and learning rate (Python floats) and its ``perf_counter`` time; its
    message is built when the batch is released.

    Times (``now``) are ``time.perf_counter()`` seconds; messages carry ``time.time()``.
    """

    def __init__(self, run_id: str, model: nn.Module, loss: LossWatch | None,
                 telemetry_due: Callable[[], bool] | None = None) -> None:
        self.run_id, self.loss = run_id, loss
        self.telemetry = ParamTelemetry(model, clip_due=telemetry_due)
        self.telemetry_due = False  # before_step ran; after_step completes the telemetry step
        self.telemetry_seconds = 0.0  # cost of the last telemetry step, both hooks
        self.telemetry_post_seconds = 0.0  # the part of it spent in after_step
        self._stager = HostStager()
        #: Plain steps waiting for the next batch, in step order: (step, perf_counter time,
        #: loss float or None, ``lr`` float or a :func:`learning_rates` dict). Run's quiet path
        #: appends to it directly (see :meth:`hold`); the list object is never replaced.
        self.held: list[tuple[int, float, float | None, Any]] = []

    def before_step(self) -> None:
        """Call in the optimizer pre-hook of a telemetry step."""
        start = time.perf_counter()
        self.telemetry.before_step()
        self.telemetry_due = True
        self.telemetry_seconds = time.perf_counter() - start

    def quiet_window(self, now: float) -> tuple[int, float]:
        """``(steps, deadline)``: how many of the next steps :meth:`hold` may take without the
        batch becoming due, provided they start before ``deadline`` (perf_counter seconds).
        ``(0, now)`` while a step waits for its device copy or telemetry is under way."""
        if self._stager.pending or self.telemetry_due:
            return 0, now
        held = self.held
        first = held[0][1] if held else now  # empty: the next held step starts the batch later
        return BATCH_STEPS - 1 - len(held), first + BATCH_SECONDS

    def hold(self, optimizer: Any, step: int, now: float) -> bool:
        """Hold a plain step (no telemetry, no statistics) for the next batch, without checking
        whether the batch is due (see :meth:`quiet_window`). False, and nothing done, when the
        loss is on a GPU: such a step needs the device copy of :meth:`after_step`. Only call it
        when no device copy is pending. ``Run._after_step`` has an inline twin of this for its
        quiet steps: keep the two alike."""
        watch = self.loss
        loss = None
        if watch is not None:
            loss = watch.latest
            if loss is not None:
                if loss.is_cuda:
                    return False
                watch.latest = None
                try:
                    loss = loss.item()
                except RuntimeError:  # an unreduced loss (more than one element): its mean
                    loss = LossWatch.scalar(loss).item()
        groups = optimizer.param_groups
        rate = groups[0].get("lr") if len(groups) == 1 else None
        if type(rate) is not float:  # the common case above stays cheap
            rate = learning_rates(optimizer)
        self.held.append((step, now, loss, rate))
        return True

    def after_step(self, optimizer: Any, step: int,
                   stats: Sequence[tuple[str, torch.Tensor]] = (),
                   now: float | None = None) -> list[Message]:
        """Messages ready now. ``stats``: (layer, float32 [len(ACTIVATION_STATS)]) on the device;
        ``now``: the step's perf_counter time (default: now)."""
        now = time.perf_counter() if now is None else now
        if not (stats or self.telemetry_due or self._stager.pending) \
                and self.hold(optimizer, step, now):
            held = self.held
            if len(held) < BATCH_STEPS and now - held[0][1] < BATCH_SECONDS:
                return []
            return self.release_batch()
        loss = self.loss.take() if self.loss is not None else None
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
                           (LOSS.name,) if loss is not None else (), vector is not None,
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
        """The plain CPU steps held so far as one ScalarSeries (one per stretch of steps with
        the same scalar names, should a step lack its loss or a param group's rate change; a
        lone step as its Scalars)."""
        if not self.held:
            return []
        held = self.held.copy()
        self.held.clear()
        # perf_counter is what the hook reads anyway; one wall-clock reading per batch maps
        # it to time.time() (the clocks do not drift apart measurably within a batch).
        offset = time.time() - time.perf_counter()
        series: list[Message] = []
        names: tuple[str, ...] = ()
        steps: list[int] = []
        times: list[float] = []
        rows: list[list[float]] = []
        for step, at, loss, rate in held:
            values = {LR.name: rate} if type(rate) is float else dict(rate)
            if loss is not None:
                values[LOSS.name] = loss
            if tuple(values) != names:
                series += self._series(names, steps, times, rows, offset)
                names, steps, times, rows = tuple(values), [], [], []
            steps.append(step)
            times.append(at)
            rows.append(list(values.values()))
        return series + self._series(names, steps, times, rows, offset)

    def _series(self, names: tuple[str, ...], steps: list[int], times: list[float],
                rows: list[list[float]], offset: float) -> list[Message]:
        """One ScalarSeries of held steps (a lone step: its Scalars, cheaper to build and to
        frame; none when ``steps`` is empty); ``times`` are perf_counter seconds, ``offset``
        maps them to time.time()."""
        if len(steps) < 2:
            return [Scalars(run_id=self.run_id, step=step, wall_time=at + offset,
                            values=dict(zip(names, row)))
                    for step, at, row in zip(steps, times, rows)]
        return [ScalarSeries(run_id=self.run_id, names=names,
                             steps=np.array(steps, dtype=np.int64),
                             wall_times=np.array(times, dtype=np.float64) + offset,
                             values=np.array(rows, dtype=np.float64))]

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
                                    layers=tuple(self.telemetry.layers), stats=PARAMETER_STATS,
                                    values=per_layer))
        if meta.stats_layers:
            matrix = np.asarray(values[position:], dtype=np.float32).reshape(
                len(meta.stats_layers), len(ACTIVATION_STATS))
            found.append(LayerStats(run_id=self.run_id, step=meta.step, layers=meta.stats_layers,
                                    stats=ACTIVATION_STATS, values=matrix))
        found.append(Scalars(run_id=self.run_id, step=meta.step, wall_time=meta.wall_time,
                             values=scalars))
        return found


_NOTHING: dict[str, tuple[int, int]] = {}


def nonfinite_counts(message: Message) -> dict[str, tuple[int, int]]:
    """NaN/Inf a message reports, as ``{what: (step, count)}`` with ``what`` ``"loss"``,
    ``"gradients"`` or a layer, and the (first) step that has them."""
    if isinstance(message, Scalars):
        values = message.values
        loss_ok = math.isfinite(values.get(LOSS.name, 0.0))
        if loss_ok and not values.get(NONFINITE_GRAD.name):
            return _NOTHING  # most steps come here: no allocation
        return {name: (message.step, 1)
                for name, bad in ((LOSS.name, not loss_ok),
                                  ("gradients", bool(values.get(NONFINITE_GRAD.name)))) if bad}
    if isinstance(message, ScalarSeries):
        return _series_nonfinite(message)
    if isinstance(message, LayerStats) and NONFINITE.name in message.stats:
        column = message.values[:, message.stats.index(NONFINITE.name)]
        return {name: (message.step, int(count))
                for name, count in zip(message.layers, column) if count > 0}
    if isinstance(message, Snapshot):
        return {name: (message.step, count) for name, count in message.nonfinite.items()
                if count}
    return _NOTHING


def _series_nonfinite(message: ScalarSeries) -> dict[str, tuple[int, int]]:
    """A series' first step with a NaN/Inf loss and with flagged gradients, each counted
    once."""
    found = {}
    for name, what, bad_of in ((LOSS.name, LOSS.name, lambda c: ~np.isfinite(c)),
                               (NONFINITE_GRAD.name, "gradients", lambda c: c != 0)):
        if name in message.names:
            bad = np.flatnonzero(bad_of(message.values[:, message.names.index(name)]))
            if bad.size:  # as the first step's own Scalars would report it
                found[what] = (int(message.steps[bad[0]]), 1)
    return found or _NOTHING


def nonfinite_text(what: str, step: int) -> str:
    """What a key of :func:`nonfinite_counts` says to a reader: ``"layer '0' has NaN/Inf
    values at step 5"`` (a module path such as ``0`` quoted, so it reads as a name)."""
    if what == LOSS.name:
        return f"the training loss is NaN/Inf at step {step}"
    if what == "gradients":
        return f"the gradients have NaN/Inf values at step {step}"
    return f"layer {what!r} has NaN/Inf values at step {step}"


def logged_value(key: str, value: Any) -> float:
    """A value given to ``run.log(key=value)`` as a float; ValueError if it is not a number."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, numbers.Real):
        return float(value)
    raise ValueError(f"run.log({key}=...) needs a number, got {type(value).__name__}")
