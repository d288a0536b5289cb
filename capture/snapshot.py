"""The probe forward: run the probe set through the model without changing training.

Inside :func:`probe_mode` the model is in eval mode under ``torch.no_grad()``; on exit every
module's own ``training`` flag and the global RNG states (torch CPU and CUDA, numpy, Python)
are put back exactly, so the next training step computes what it would have computed unwatched.
Probe inputs stay on the CPU and move to the model's device one chunk at a time.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sentrycam.capture import batches
from sentrycam.capture.layers import IDLE, PROBE, LayerCaptureError, LayerTap, first_tensor
from sentrycam.protocol.messages import Snapshot
from sentrycam.capture.probe import Probe, preserved_global_rngs

PROBE_CHUNK = 256
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


class ProbeRunner:
    """Runs the probe through the model in chunks, collecting outputs and layer features."""

    def __init__(self, model: nn.Module, probe: Probe, taps: list[LayerTap],
                 device: torch.device) -> None:
        self.model, self.probe, self.taps, self.device = model, probe, taps, device
        self._labels = torch.from_numpy(probe.labels).to(device)

    def _forward(self, start: int, stop: int, features: dict[str, list[torch.Tensor]]
                 ) -> torch.Tensor | None:
        """One chunk: returns logits (or None) and appends each layer's [chunk, D] features."""
        chunk = batches.apply(self.probe.inputs, lambda tensor: tensor[start:stop].to(
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

    def _run(self, stop: int) -> tuple[list[torch.Tensor | None], dict[str, list[torch.Tensor]]]:
        modes = [tap.mode for tap in self.taps]
        features: dict[str, list[torch.Tensor]] = {}
        logits = []
        try:
            with probe_mode(self.model):
                for start in range(0, stop, PROBE_CHUNK):
                    logits.append(self._forward(start, min(start + PROBE_CHUNK, stop), features))
        finally:
            for tap, mode in zip(self.taps, modes):  # put back a pending STATS arming
                tap.features = []
                if mode == IDLE:
                    tap.disarm()
                else:
                    tap.mode = mode
        return logits, features

    def check(self) -> None:
        """Forward two probe samples; ValueError when the model, a layer or the labels disagree."""
        n = min(2, len(self.probe))
        shown = batches.describe(batches.apply(self.probe.inputs, lambda tensor: tensor[:n]))
        try:
            logits, features = self._run(n)
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

    def take(self, run_id: str, step: int, epoch: int) -> Snapshot:
        """The probe seen by the model now (features float16, see :class:`Snapshot`)."""
        n = len(self.probe)
        logits, features = self._run(n)
        outputs: dict[str, np.ndarray] = {}
        if logits and all(chunk is not None for chunk in logits):
            summary = output_summaries(torch.cat(logits), self._labels)
            outputs = {name: value.cpu().numpy() for name, value in summary.items()}
        arrays, nonfinite = {}, {}
        for name, chunks in features.items():
            if sum(len(c) for c in chunks) != n:
                continue  # the layer skipped some chunk (conditional compute): leave it out
            arrays[name], nonfinite[name] = _to_float16(torch.cat(chunks))
        return Snapshot(run_id=run_id, step=step, epoch=epoch, sample_ids=self.probe.sample_ids,
                        outputs=outputs, features=arrays, nonfinite=nonfinite)


def _to_float16(features: torch.Tensor) -> tuple[np.ndarray, int]:
    """(float16 [N, D] array, NaN/Inf count before the cast); finite values clamped to fp16."""
    finite = torch.isfinite(features)
    bad = int(finite.numel() - finite.sum().item())
    clamped = torch.where(finite, features.clamp(-FLOAT16_MAX, FLOAT16_MAX), features)
    return clamped.to(torch.float16).cpu().numpy(), bad
