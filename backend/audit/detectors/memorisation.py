"""Training that stopped seeing new data: the batch loss leaves the loss of the data it stands for.

Two detectors on signals the tool already has (the per-batch training loss, and the probe's
per-sample loss on its training-split samples at each snapshot):

- :class:`RepeatedBatch`: a loader that serves the same batch again and again. Batch-to-batch
  sampling makes a minibatch loss zig-zag around its trend; on one repeated batch the loss
  falls smoothly, step after step (every step is gradient descent on the same sum). Measured as
  the path efficiency of the log-loss over the last ``WINDOW`` steps: net fall over the summed
  absolute changes, 1 when it only falls. On the tuning splits' runs it stays below 0.5
  in healthy runs and reaches 1.0 about 15 steps after the loader repeats.
- :class:`TrainProbeGap`: the batch loss falls far below the loss of the same model, at the same
  step, on the probe's training-split samples (drawn from the same training set). The batches
  then come from a small part of the data the model is memorising (a subset, one batch): the
  first sign of overfitting, before the held-out loss turns up. Judged against the gap's own
  history (the batch loss runs a little under the probe's by chance and by the snapshot's lag).

Both are quiet on full-batch training and on runs without a per-batch loss: the first is judged
only once the run has shown batch-to-batch noise, the second needs a probe with labels.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from sentrycam.backend.audit.alerts import Finding
from sentrycam.backend.audit.baselines import Escalation, Levels, finite_log, robust_center_scale
from sentrycam.backend.audit.detectors.base import Detector, ProbeView, finding
from sentrycam.backend.audit.detectors.loss import LossDivergence, finite_loss
from sentrycam.backend.audit.detectors.outputs import train_rows
from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.messages import Scalars
from sentrycam.protocol.signals import LOSS

#: Steps over which the batch loss's path efficiency is measured.
WINDOW = 12
#: Path efficiency from which the loss counts as falling without batch noise (exactly 1.0 on a
#: repeated batch; healthy minibatch losses stay below 0.5 over 12 steps).
FALLS_ONLY = 0.95
#: Before judging, the run must have shown minibatch noise: the median efficiency over the
#: trailing ``NOISE_HISTORY`` steps below this (full-batch training never qualifies).
STOCHASTIC = 0.5
NOISE_HISTORY = 100
#: Steps of calibration before any judgement, as for the other per-step loss detectors.
WARMUP = 80


class RepeatedBatch(Detector):
    """The batch loss only falls, step after step, in a run whose batches were noisy."""

    name = "repeated_batch"
    kinds = frozenset({ChangeKind.SCALARS})
    waiting_for = LossDivergence.waiting_for

    def __init__(self) -> None:
        super().__init__()
        self.logs: deque[float] = deque(maxlen=WINDOW + 1)
        self.history: deque[float] = deque(maxlen=NOISE_HISTORY)
        self.count = 0
        # One-way for 3 consecutive steps confirms (a chance run of 12 same-sign steps in a
        # noisy loss is rare; three in a row rarer still).
        self.escalation = Escalation(Levels(develop=1.0, confirm=math.inf, persist=3,
                                            max_level=2))

    def observe(self, kind: str, item: Scalars) -> list[Finding]:
        loss = finite_loss(self, item)
        if loss is None:
            return []
        self.logs.append(finite_log(max(loss, 1e-30)))
        self.count += 1
        if len(self.logs) <= WINDOW:
            return []
        path = np.abs(np.diff(self.logs)).sum()
        if not path > 0:  # a loss that does not move at all is stagnation's business
            return []
        # Falls only: a loss that climbs step after step is a blow-up (loss_divergence's).
        efficiency = (self.logs[0] - self.logs[-1]) / float(path)
        noisy_before = (len(self.history) >= NOISE_HISTORY // 2
                        and float(np.median(self.history)) < STOCHASTIC)
        judged = self.count > WARMUP and noisy_before
        falls_only = judged and efficiency >= FALLS_ONLY
        level = self.escalation.level(1.0 if falls_only else None)
        if not falls_only:
            self.history.append(efficiency)
        return [finding(
            self.name, item.step, level, efficiency,
            evidence={"steps": [item.step], "values": [round(efficiency, 4)],
                      "series": f"path efficiency of the batch log-loss over {WINDOW} steps",
                      "baseline": round(float(np.median(self.history)), 4)},
            message=f"the batch loss has only fallen for {WINDOW} steps (path "
                    f"efficiency {efficiency:.2f}; it was {np.median(self.history):.2f} before): "
                    "the model sees the same batch again and again",
            suggestion="the data loader repeats one batch (a stalled iterator, a cached batch, "
                       "a sampler stuck on one index); check that each step draws new samples",
            confidence=0.6)]


#: Probe snapshots of the gap that calibrate it before any judgement.
GAP_CALIBRATION = 4
#: Normal gaps the baseline is taken over (median and robust spread).
GAP_HISTORY = 8
#: Smallest spread of the gap in log units: with it, develop (2) is a batch loss 1.6x further
#: below the probe's than usual, confirm (4) 2.7x. Healthy runs of the tuning splits move it
#: by up to 0.8 between snapshots (a GRU's noisy batches), never twice in a row.
GAP_FLOOR = 0.25
GAP_LEVELS = Levels(develop=2.0, confirm=4.0, critical=12.0, persist=2)
#: Batch losses (the last ones before a snapshot) that stand for the model at the snapshot.
RECENT_LOSSES = 10
#: Batch losses kept by step: a spread snapshot arrives after the scalars of later steps (and
#: quiet steps' scalars come in batches), so the ones at or before its step are picked by step.
RECENT_KEPT = 256
#: Probe samples per group when the probe's loss is summarised as a batch would see it (a
#: common minibatch size; at least two groups are needed).
GROUP = 32


class TrainProbeGap(Detector):
    """At each snapshot: log(probe training-split loss) - log(recent batch loss), against its
    own history."""

    name = "memorisation"
    kinds = frozenset({ChangeKind.SCALARS, ChangeKind.SNAPSHOT})
    waiting_for = ("no per-batch training loss, or no probe snapshot with per-sample losses "
                   "on training-split samples, yet")

    def __init__(self) -> None:
        super().__init__()
        self.recent: deque[tuple[int, float]] = deque(maxlen=RECENT_KEPT)  # (step, log loss)
        self.compared_through = -1  # the step of the last snapshot compared with the batches
        self.gaps: deque[float] = deque(maxlen=GAP_HISTORY)
        self.points: deque[tuple[int, float]] = deque(maxlen=40)
        self.escalation = Escalation(GAP_LEVELS)
        self.batch = math.nan  # the recent batch log-loss at the previous snapshot

    def observe(self, kind: str, item: Scalars | ProbeView) -> list[Finding]:
        if kind == ChangeKind.SCALARS:
            loss = item.values.get(LOSS.name)
            if loss is not None and math.isfinite(loss) and loss > 0:
                self.recent.append((item.step, math.log(loss)))
            return []
        measured = self._gap(item)
        if measured is None:
            return []
        gap, batch = measured
        self.seen()
        self.points.append((item.step, gap))
        previous, self.batch = self.batch, batch
        if len(self.gaps) < GAP_CALIBRATION:
            self.gaps.append(gap)
            return []
        center, scale = robust_center_scale(self.gaps, GAP_FLOOR)
        score = (gap - center) / scale
        # The batches must have got easier: their loss fell since the last snapshot by at
        # least half the gap's excess. A gap opened by the probe's loss rising instead is the
        # model getting worse on data it does not train on right now (in eval mode: batch
        # norm statistics lagging a fast-moving model, the healthy demo at 250 steps), not
        # memorising its batches; the output detectors judge that.
        fell = previous - batch >= 0.5 * (gap - center)
        level = self.escalation.level(score if fell else None)
        if score < GAP_LEVELS.develop:
            self.gaps.append(gap)  # an anomalous gap does not widen its own yardstick
        return [finding(
            self.name, item.step, level, score,
            evidence={"steps": [s for s, _ in self.points],
                      "values": [round(v, 4) for _, v in self.points],
                      "series": "log(probe training-split loss / recent batch loss)",
                      "baseline": round(center, 4), "scale": round(scale, 4)},
            message=f"the training batches' loss is {math.exp(gap):.3g}x below the loss on the "
                    f"probe's training-split samples (usually {math.exp(center):.3g}x; "
                    f"{score:.1f} noise units): the model is fitting the batches it sees, not "
                    "the data they come from",
            suggestion="training draws from a small part of the data (a subset, a repeated "
                       "batch) and the model memorises it; check the sampler, use more data or "
                       "regularise, and watch the held-out loss", confidence=0.55)]

    def _gap(self, view: ProbeView) -> tuple[float, float] | None:
        """(gap, recent batch log-loss) at this snapshot, or None without the inputs."""
        losses = view.outputs.get("loss")
        recent = sorted((step, value) for step, value in self.recent
                        if self.compared_through < step <= view.step)[-RECENT_LOSSES:]
        if losses is None or len(recent) < RECENT_LOSSES // 2:
            return None
        train = np.asarray(losses, dtype=np.float64)[train_rows(view)]
        train = train[np.isfinite(train)]
        groups = train.size // GROUP
        if groups < 2:
            return None
        # What a typical batch of these samples would show: the median of group means. A
        # well-fitted model's per-sample losses are heavy-tailed (a few hard samples carry most
        # of the mean), and most batches miss them, so the plain mean sits far above the
        # typical batch loss of a healthy run (16x on the demo at 250 steps).
        means = train[: groups * GROUP].reshape(groups, GROUP).mean(axis=1)
        typical = float(np.median(means))
        if not typical > 0:
            return None
        batch = float(np.median([value for _, value in recent]))
        self.compared_through = view.step  # the next snapshot compares with later batches
        return math.log(typical) - batch, batch
