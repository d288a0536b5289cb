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

from sentrycam.capture import batches
from sentrycam.capture.attention import AttentionRecorder, AttentionTotals, attention_stats
from sentrycam.capture.layers import IDLE, PROBE, LayerCaptureError, LayerTap, first_tensor
from sentrycam.protocol.messages import Message, Snapshot
from sentrycam.capture.probe import Probe, preserved_global_rngs

PROBE_CHUNK = 256
#: Largest model (parameters and buffers, bytes) whose weights a spread snapshot copies; a
#: larger one gets its probe pass in one go at the snapshot step, as a one-shot snapshot.
MAX_COPY_BYTES = 256 * 2**20
#: A slice of a spread probe pass aims at this fraction of a training step's time (its fixed
#: cost, the eval switch and the RNG states, included; at least half of it for the forward) ...
SLICE_FRACTION = 0.3
#: ... within these many samples (the first slice, before the cost per sample is measured,
#: takes FIRST_SLICE; a slice never takes more than PROBE_CHUNK).
MIN_SLICE, FIRST_SLICE = 8, 32
SAMPLE_SMOOTHING = 0.3
#: Largest finite float16; larger finite features are clamped so the cast adds no infinities.
FLOAT16_MAX = 65504.0


@contextlib.contextmanager
def probe_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, no_grad, and the exact training flags and global RNG states restored on exit.

    A spread snapshot enters this for every slice, so the flags are set as plain attributes
    (``nn.Module.__setattr__`` costs microseconds per module) wherever ``eval()`` would do
    no more than that: when no module overrides ``train``."""
    modules = list(model.modules())
    flags = [module.training for module in modules]
    if all(type(module).train is nn.Module.train for module in modules):
        for module in modules:
            object.__setattr__(module, "training", False)
    else:
        model.eval()
    try:
        with preserved_global_rngs(), torch.no_grad():
            yield
    finally:
        for module, training in zip(modules, flags):
            if module.training is not training:
                object.__setattr__(module, "training", training)


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


def prefix_order(labels: np.ndarray, split: np.ndarray) -> np.ndarray:
    """Probe positions int64 [N] in an order whose every prefix is stratified: each (split,
    label) group's samples are spread evenly over the order, in their probe order."""
    groups = np.unique(np.stack([split.astype(np.int64), labels], 1), axis=0,
                       return_inverse=True)[1].reshape(-1)
    place = np.empty(len(labels))
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        place[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.argsort(place, kind="stable")


class FrozenWeights:
    """Detached copies of a model's parameters and buffers, and the means to run the model
    at them: inside :meth:`swapped`, each tensor's ``.data`` is its copy; on exit every tensor
    holds its own storage again, untouched (the probe runs under no_grad, so no autograd
    state sees the swap). Cheaper than ``torch.func.functional_call``, which rebuilds the
    module attributes on every call."""

    def __init__(self, model: nn.Module) -> None:
        seen: set[int] = set()
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        for tensor in (*model.parameters(), *model.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                self.pairs.append((tensor, tensor.detach().clone()))

    @staticmethod
    def nbytes(model: nn.Module) -> int:
        """Bytes a copy of ``model``'s parameters and buffers takes."""
        tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
        return sum(t.numel() * t.element_size() for t in tensors.values())

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        own = []
        try:
            with torch.no_grad():
                for tensor, copy in self.pairs:
                    own.append(tensor.data)
                    tensor.data = copy
            yield
        finally:
            with torch.no_grad():
                for (tensor, _), data in zip(self.pairs, own):
                    tensor.data = data


@dataclass
class PendingSnapshot:
    """A snapshot whose probe pass runs in slices over the steps after ``step``, all at the
    weights of ``step``: ``weights`` holds copies made at that step (None for a one-shot pass,
    run at once while the model holds them). The pass covers the first ``target`` probe
    positions of :attr:`ProbeRunner.order` (the pacer may lower it while the pass runs, never
    below ``done``); ``done`` of them are through; ``logits`` and ``features`` hold their
    chunks so far, ``attention`` the sums of its attention statistics
    (:mod:`sentrycam.capture.attention`)."""

    step: int
    epoch: int
    weights: FrozenWeights | None
    target: int
    done: int = 0
    seconds: float = 0.0  # spent in this snapshot's slices so far (the copy included)
    logits: list[torch.Tensor | None] = field(default_factory=list)
    features: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    attention: AttentionTotals = field(default_factory=dict)


class ProbeRunner:
    """Runs the probe through the model in chunks, collecting outputs and layer features.

    A snapshot is taken either at once (:meth:`take`) or spread over steps: :meth:`begin` at
    the snapshot step copies the weights (at most ``max_copy_bytes``; a larger model gets a
    one-shot pass instead), then each :meth:`advance` runs the next slice of the probe at
    those weights (:class:`FrozenWeights`), whatever training did since. Samples run in
    :attr:`order`, whose every prefix is class-stratified, so that a snapshot of fewer samples
    than the probe (a spread snapshot whose ``target`` the pacer lowered) keeps the class
    proportions; its rows come out in probe order.
    """

    def __init__(self, model: nn.Module, probe: Probe, taps: list[LayerTap],
                 device: torch.device, max_copy_bytes: int = MAX_COPY_BYTES) -> None:
        self.model, self.probe, self.taps, self.device = model, probe, taps, device
        self.max_copy_bytes = max_copy_bytes
        self.order = prefix_order(probe.labels, probe.split)
        self._positions = torch.from_numpy(self.order)
        self._labels = torch.from_numpy(probe.labels).to(device)
        self.sample_seconds: float | None = None  # smoothed forward seconds per sample
        self.slice_overhead = 0.0  # smoothed seconds of a slice outside the model's forward
        self.attention = AttentionRecorder(model)

    def _forward(self, start: int, stop: int, features: dict[str, list[torch.Tensor]]
                 ) -> torch.Tensor | None:
        """One chunk, positions ``start:stop`` of :attr:`order`: returns logits (or None) and
        appends each layer's [chunk, D] features."""
        rows = self._positions[start:stop]
        chunk = batches.apply(self.probe.inputs, lambda tensor: tensor[rows].to(
            self.device, non_blocking=True))
        mask = batches.token_mask(chunk)
        for tap in self.taps:
            tap.features, tap.mask = [], mask
            tap.arm(PROBE)
        output = batches.call(self.model, chunk)
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
             weights: FrozenWeights | None = None) -> tuple[list[torch.Tensor | None], float]:
        """Positions ``start:stop`` of :attr:`order` in chunks of at most PROBE_CHUNK, at
        ``weights`` (None: the model's own); returns their logits and the seconds spent in
        the forward passes."""
        modes = [tap.mode for tap in self.taps]
        logits, forward = [], 0.0
        try:
            with probe_mode(self.model), (weights.swapped() if weights is not None
                                          else contextlib.nullcontext()):
                for first in range(start, stop, PROBE_CHUNK):
                    started = perf_counter()
                    logits.append(self._forward(first, min(first + PROBE_CHUNK, stop), features))
                    forward += perf_counter() - started
        finally:
            for tap, mode in zip(self.taps, modes):  # put back a pending STATS arming
                tap.features = []
                if mode == IDLE:
                    tap.disarm()
                else:
                    tap.mode = mode
        return logits, forward

    def check(self) -> None:
        """Forward two probe samples; ValueError when the model, a layer or the labels disagree."""
        n = min(2, len(self.probe))
        shown = batches.describe(batches.apply(self.probe.inputs, lambda tensor: tensor[:n]))
        features: dict[str, list[torch.Tensor]] = {}
        try:
            logits, _ = self._run(0, n, features)
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

    def begin(self, step: int, epoch: int, target: int | None = None) -> PendingSnapshot:
        """Start the snapshot of ``step`` over the first ``target`` positions of :attr:`order`
        (None: the whole probe); call it right after that step's update. Copies the weights,
        or, for a model over ``max_copy_bytes``, runs the pass now."""
        started = perf_counter()
        target = len(self.probe) if target is None else min(target, len(self.probe))
        weights = (FrozenWeights(self.model)
                   if FrozenWeights.nbytes(self.model) <= self.max_copy_bytes else None)
        pending = PendingSnapshot(step, epoch, weights, target, seconds=perf_counter() - started)
        if weights is None:
            self.advance(pending, target)
        return pending

    def advance(self, pending: PendingSnapshot, count: int) -> bool:
        """Run the next ``count`` samples of ``pending``; True once its ``target`` is reached."""
        start, stop = pending.done, min(pending.done + max(count, 1), pending.target)
        if stop > start:
            started = perf_counter()
            with self.attention.recording(pending.attention):
                logits, forward = self._run(start, stop, pending.features, pending.weights)
            seconds = perf_counter() - started
            pending.logits += logits
            pending.done, pending.seconds = stop, pending.seconds + seconds
            self._learn(forward / (stop - start), seconds - forward)
        if pending.done >= pending.target:
            pending.weights = None  # the copy's memory goes back at once
            return True
        return False

    def _learn(self, per_sample: float, overhead: float) -> None:
        previous = self.sample_seconds
        if previous is None:
            self.sample_seconds, self.slice_overhead = per_sample, overhead
            return
        self.sample_seconds = previous + SAMPLE_SMOOTHING * (per_sample - previous)
        self.slice_overhead += SAMPLE_SMOOTHING * (overhead - self.slice_overhead)

    def slice_size(self, pending: PendingSnapshot, steps_left: int, step_time: float | None
                   ) -> int:
        """Samples for the next slice: what fits in ``SLICE_FRACTION`` of ``step_time`` (the
        training step's seconds) at the measured costs (a slice's fixed part, then per
        sample), but at least enough to reach the target within ``steps_left`` steps (the
        next snapshot is due then)."""
        remaining = pending.target - pending.done
        pace = -(-remaining // max(steps_left, 1))
        if self.sample_seconds and step_time:
            room = SLICE_FRACTION * step_time
            timed = int(max(room - self.slice_overhead, room / 2) / self.sample_seconds)
        else:
            timed = FIRST_SLICE
        return min(remaining, max(pace, MIN_SLICE, min(timed, PROBE_CHUNK)))

    def affordable(self, seconds: float) -> int | None:
        """Probe samples a spread snapshot can run in ``seconds`` at the measured costs (a
        slice's fixed part counted once per PROBE_CHUNK samples); None before a slice ran."""
        if not self.sample_seconds:
            return None
        per_sample = self.sample_seconds + self.slice_overhead / PROBE_CHUNK
        return int(seconds / per_sample)

    def finish(self, run_id: str, pending: PendingSnapshot) -> list[Message]:
        """The finished snapshot of the ``pending.target`` first positions of :attr:`order`,
        rows in probe order (features float16, see :class:`Snapshot`), followed by the
        LayerStats of its attention heads where the model has attention modules; runs what is
        left of the pass first."""
        if pending.done < pending.target:
            self.advance(pending, pending.target - pending.done)
        n = pending.done
        positions = self.order[:n]
        rows = torch.from_numpy(np.argsort(positions, kind="stable"))
        outputs: dict[str, np.ndarray] = {}
        if pending.logits and all(chunk is not None for chunk in pending.logits):
            logits = torch.cat(pending.logits)[rows.to(self.device)]
            summary = output_summaries(logits, self._labels[torch.from_numpy(
                np.sort(positions)).to(self.device)])
            outputs = {name: value.cpu().numpy() for name, value in summary.items()}
        arrays, nonfinite = {}, {}
        for name, chunks in pending.features.items():
            if sum(len(c) for c in chunks) != n:
                continue  # the layer skipped some chunk (conditional compute): leave it out
            arrays[name], nonfinite[name] = _to_float16(torch.cat(chunks)[rows.to(
                chunks[0].device)])
        snapshot = Snapshot(run_id=run_id, step=pending.step, epoch=pending.epoch,
                            sample_ids=self.probe.sample_ids[np.sort(positions)],
                            outputs=outputs, features=arrays, nonfinite=nonfinite)
        attention = attention_stats(run_id, pending.step, pending.attention)
        return [snapshot] if attention is None else [snapshot, attention]

    def take(self, run_id: str, step: int, epoch: int) -> list[Message]:
        """The whole probe seen by the model now, in one pass (no copy of the weights)."""
        return self.finish(run_id, PendingSnapshot(step, epoch, None, len(self.probe)))


def _to_float16(features: torch.Tensor) -> tuple[np.ndarray, int]:
    """(float16 [N, D] array, NaN/Inf count before the cast); finite values clamped to fp16."""
    finite = torch.isfinite(features)
    bad = int(finite.numel() - finite.sum().item())
    clamped = torch.where(finite, features.clamp(-FLOAT16_MAX, FLOAT16_MAX), features)
    return clamped.to(torch.float16).cpu().numpy(), bad
