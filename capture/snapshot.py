"""The probe forward: run the probe set through the model without changing training.

Inside :func:`probe_mode` the model is in eval mode under ``torch.no_grad()``; on exit every
module's own ``training`` flag and the global RNG states (torch CPU and CUDA, numpy, Python)
are put back exactly, so the next training step computes what it would have computed unwatched.
Probe inputs stay on the CPU and move to the model's device one chunk at a time.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sentrycam.capture import batches
from sentrycam.capture.attention import AttentionRecorder, AttentionTotals, attention_stats
from sentrycam.capture.layers import IDLE, PROBE, LayerCaptureError, LayerTap, first_tensor
from sentrycam.protocol.messages import Message, Snapshot
from sentrycam.capture.probe import Probe, preserved_global_rngs

PROBE_CHUNK = 256
#: Largest model (parameters and buffers, bytes) whose weights a spread snapshot copies; a
#: larger one gets its probe pass in one go at the snapshot step, as a one-shot snapshot.
MAX_COPY_BYTES = 256 * 2**20
#: A slice of a spread probe pass aims at this fraction of a training step's time ...
SLICE_FRACTION = 0.2
#: ... within these many samples (the first slice, before the cost per sample is measured,
#: takes FIRST_SLICE).
MIN_SLICE, FIRST_SLICE = 8, 32
SAMPLE_SMOOTHING = 0.3
#: Largest finite float16; larger finite features are clamped so the cast adds no infinities.
FLOAT16_MAX = 65504.0


@contextlib.contextmanager
def probe_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, no_grad, and the exact training flags and global RNG states restored on exit."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with preserved_global_rngs(), torch.no_grad():
            yield
    finally:
        for module, training in flags:
            module.training = training


def output_logits(output: Any) -> torch.Tensor | None:
    """Logits [N, C] from a model output (tensor, tuple/dict -> first tensor, ``.logits``), or
    None when the output is not 2-D."""
    logits = getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        try:
            logits = first_tensor(output)
        except TypeError:
            return None
    return logits if isinstance(logits, torch.Tensor) and logits.ndim == 2 else None


def output_summaries(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample ``pred`` int64 and ``confidence``/``loss``/``entropy``/``margin`` float32 [N].

    ``logits`` [N, C]; ``labels`` int64 [N] on the same device, -1 where unknown (loss NaN).
    """
    logits = logits.float()
    log_probs = F.log_softmax(logits, dim=1)
    probs = log_probs.exp()
    n_classes = logits.shape[1]
    confidence, pred = probs.max(1)
    known = (labels >= 0) & (labels < n_classes)
    per_sample = F.nll_loss(log_probs, labels.clamp(0, n_classes - 1), reduction="none")
    nan = torch.full_like(confidence, math.nan)
    if n_classes >= 2:
        top2 = probs.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
    else:
        margin = nan
    return {"pred": pred, "confidence": confidence, "loss": torch.where(known, per_sample, nan),
            "entropy": -(probs * log_probs).sum(1), "margin": margin}


@dataclass
class PendingSnapshot:
    """A snapshot whose probe pass runs in slices over the steps after ``step``, all at the
    weights of ``step``: ``weights`` maps every parameter and buffer name to a detached copy
    made at that step (None for a one-shot pass, run at once while the model holds them).
    ``done`` samples are through; ``logits`` and ``features`` hold their chunks so far,
    ``attention`` the sums of its attention statistics (:mod:`sentrycam.capture.attention`)."""

    step: int
    epoch: int
    weights: dict[str, torch.Tensor] | None
    done: int = 0
    seconds: float = 0.0  # spent in this snapshot's slices so far (the copy included)
    logits: list[torch.Tensor | None] = field(default_factory=list)
    features: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    attention: AttentionTotals = field(default_factory=dict)


def frozen_weights(model: nn.Module, max_bytes: int) -> dict[str, torch.Tensor] | None:
    """A detached copy of every parameter and buffer of ``model`` (on their own devices), or
    None when they hold more than ``max_bytes`` bytes together."""
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    if sum(t.numel() * t.element_size() for t in tensors.values()) > max_bytes:
        return None
    return {name: tensor.detach().clone() for name, tensor in tensors.items()}


class ProbeRunner:
    """Runs the probe through the model in chunks, collecting outputs and layer features.

    A snapshot is taken either at once (:meth:`take`) or spread over steps: :meth:`begin` at
    the snapshot step copies the weights (at most ``max_copy_bytes``; a larger model gets a
    one-shot pass instead), then each :meth:`advance` runs the next slice of the probe with
    ``torch.func.functional_call`` at those weights, whatever training did since.
    """

    def __init__(self, model: nn.Module, probe: Probe, taps: list[LayerTap],
                 device: torch.device, max_copy_bytes: int = MAX_COPY_BYTES) -> None:
        self.model, self.probe, self.taps, self.device = model, probe, taps, device
        self.max_copy_bytes = max_copy_bytes
        self._labels = torch.from_numpy(probe.labels).to(device)
        self.sample_seconds: float | None = None  # smoothed probe seconds per sample
        self.attention = AttentionRecorder(model)

    def _call(self, chunk: batches.Batch, weights: dict[str, torch.Tensor] | None) -> Any:
        if weights is None:
            return batches.call(self.model, chunk)
        if isinstance(chunk, dict):
            return functional_call(self.model, weights, (), chunk)
        return functional_call(self.model, weights, chunk if isinstance(chunk, tuple)
                               else (chunk,))

    def _forward(self, start: int, stop: int, features: dict[str, list[torch.Tensor]],
                 weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor | None:
        """One chunk: returns logits (or None) and appends each layer's [chunk, D] features."""
        chunk = batches.apply(self.probe.inputs, lambda tensor: tensor[start:stop].to(
            self.device, non_blocking=True))
        mask = batches.token_mask(chunk)
        for tap in self.taps:
            tap.features, tap.mask = [], mask
            tap.arm(PROBE)
        output = self._call(chunk, weights)
        for tap in self.taps:
            tap.mode, tap.mask = IDLE, None
            if tap.features and tap.features[0].shape[0] != stop - start:
                raise LayerCaptureError(
                    f"layer {tap.spec.name!r} gave {tap.features[0].shape[0]} rows for "
                    f"{stop - start} samples: its tensor is not batch-first")
            features.setdefault(tap.spec.name, []).extend(tap.features[:1])
        logits = output_logits(output)
        return logits if logits is not None and logits.shape[0] == stop - start else None

    def _run(self, start: int, stop: int, features: dict[str, list[torch.Tensor]],
             weights: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor | None]:
        """Samples ``start:stop`` in chunks of at most PROBE_CHUNK; returns their logits."""
        modes = [tap.mode for tap in self.taps]
        logits = []
        try:
            with probe_mode(self.model):
                for first in range(start, stop, PROBE_CHUNK):
                    logits.append(self._forward(first, min(first + PROBE_CHUNK, stop), features,
                                                weights))
        finally:
            for tap, mode in zip(self.taps, modes):  # put back a pending STATS arming
                tap.features = []
                if mode == IDLE:
                    tap.disarm()
                else:
                    tap.mode = mode
        return logits

    def check(self) -> None:
        """Forward two probe samples; ValueError when the model, a layer or the labels disagree."""
        n = min(2, len(self.probe))
        shown = batches.describe(batches.apply(self.probe.inputs, lambda tensor: tensor[:n]))
        features: dict[str, list[torch.Tensor]] = {}
        try:
            logits = self._run(0, n, features)
        except LayerCaptureError as exc:
            raise ValueError(f"{exc}. It cannot be pooled to one vector per sample: choose "
                             "another layer with layers=[...]") from exc
        except Exception as exc:
            raise ValueError(f"the model rejected probe inputs of {shown}: "
                             f"{type(exc).__name__}: {exc}. Pass probe inputs shaped [N, ...] "
                             "like one training batch, with the dtype the model expects (a "
                             "dict of tensors for a model that takes keyword inputs)") from exc
        silent = [tap.spec.name for tap in self.taps if len(features.get(tap.spec.name, [])) == 0]
        if silent:
            raise ValueError(f"layers {silent} did not run during a forward pass of the probe; "
                             "name layers that the model's forward uses")
        labels = self.probe.labels
        if logits[0] is not None and labels.max() >= logits[0].shape[1]:
            raise ValueError(f"probe labels go up to {labels.max()} but the model outputs "
                             f"{logits[0].shape[1]} classes; labels must be class indices "
                             f"0..{logits[0].shape[1] - 1} (or pass labels=None)")

    def begin(self, step: int, epoch: int) -> PendingSnapshot:
        """Start the snapshot of ``step`` (call it right after that step's update): copies the
        weights, or, for a model over ``max_copy_bytes``, runs the whole probe now."""
        started = perf_counter()
        weights = frozen_weights(self.model, self.max_copy_bytes)
        pending = PendingSnapshot(step, epoch, weights, seconds=perf_counter() - started)
        if weights is None:
            self.advance(pending, len(self.probe))
        return pending

    def advance(self, pending: PendingSnapshot, count: int) -> bool:
        """Run the next ``count`` samples of ``pending``; True once the whole probe is through."""
        start, stop = pending.done, min(pending.done + max(count, 1), len(self.probe))
        started = perf_counter()
        with self.attention.recording(pending.attention):
            pending.logits += self._run(start, stop, pending.features, pending.weights)
        seconds = perf_counter() - started
        pending.done, pending.seconds = stop, pending.seconds + seconds
        per_sample = seconds / (stop - start)
        previous = self.sample_seconds
        self.sample_seconds = per_sample if previous is None else (
            previous + SAMPLE_SMOOTHING * (per_sample - previous))
        if stop == len(self.probe):
            pending.weights = None  # the copy's memory goes back at once
            return True
        return False

    def slice_size(self, pending: PendingSnapshot, steps_left: int, step_time: float | None
                   ) -> int:
        """Samples for the next slice: what fits in ``SLICE_FRACTION`` of ``step_time`` (the
        training step's seconds) at the measured cost per sample, but at least enough to finish
        within ``steps_left`` steps (the next snapshot is due then)."""
        remaining = len(self.probe) - pending.done
        pace = -(-remaining // max(steps_left, 1))
        if self.sample_seconds and step_time:
            timed = int(SLICE_FRACTION * step_time / self.sample_seconds)
        else:
            timed = FIRST_SLICE
        return min(remaining, max(pace, MIN_SLICE, min(timed, PROBE_CHUNK)))

    def finish(self, run_id: str, pending: PendingSnapshot) -> list[Message]:
        """The finished snapshot (features float16, see :class:`Snapshot`), followed by the
        LayerStats of its attention heads where the model has attention modules; runs what is
        left of the probe first."""
        if pending.done < len(self.probe):
            self.advance(pending, len(self.probe) - pending.done)
        n = len(self.probe)
        outputs: dict[str, np.ndarray] = {}
        if pending.logits and all(chunk is not None for chunk in pending.logits):
            summary = output_summaries(torch.cat(pending.logits), self._labels)
            outputs = {name: value.cpu().numpy() for name, value in summary.items()}
        arrays, nonfinite = {}, {}
        for name, chunks in pending.features.items():
            if sum(len(c) for c in chunks) != n:
                continue  # the layer skipped some chunk (conditional compute): leave it out
            arrays[name], nonfinite[name] = _to_float16(torch.cat(chunks))
        snapshot = Snapshot(run_id=run_id, step=pending.step, epoch=pending.epoch,
                            sample_ids=self.probe.sample_ids, outputs=outputs, features=arrays,
                            nonfinite=nonfinite)
        attention = attention_stats(run_id, pending.step, pending.attention)
        return [snapshot] if attention is None else [snapshot, attention]

    def take(self, run_id: str, step: int, epoch: int) -> list[Message]:
        """The probe seen by the model now, in one pass (no copy of the weights)."""
        return self.finish(run_id, PendingSnapshot(step, epoch, None))


def _to_float16(features: torch.Tensor) -> tuple[np.ndarray, int]:
    """(float16 [N, D] array, NaN/Inf count before the cast); finite values clamped to fp16."""
    finite = torch.isfinite(features)
    bad = int(finite.numel() - finite.sum().item())
    clamped = torch.where(finite, features.clamp(-FLOAT16_MAX, FLOAT16_MAX), features)
    return clamped.to(torch.float16).cpu().numpy(), bad
