"""Snapshots spread over steps: when each slice of a snapshot's probe pass runs, and its cost.

A snapshot starts at its step (:meth:`SnapshotPacer.start`): the weights are copied and the
first slice of the probe runs; each full step after it runs the next slice
(:meth:`SnapshotPacer.advance`), sized by :meth:`ProbeRunner.slice_size` so that a slice takes
a small fraction of a step and the probe is through before the next snapshot is due. A new
snapshot, ``run.snapshot()`` and detaching finish a pending one at once
(:meth:`SnapshotPacer.finish`). Every slice's seconds count as capture time in the controller
at the step that spent them; the snapshot's whole cost is its firing cost.

What is frozen: the parameters and buffers (a copy taken at the snapshot step). What a module
keeps outside them (plain Python attributes a forward reads) is read as it is when each slice
runs; ``run.snapshot()`` right after the step gives a one-shot pass where that matters.

Memory: one copy of the model's parameters and buffers while a snapshot is pending (at most
``MAX_COPY_BYTES``; a larger model gets its probe pass at once at the snapshot step, with no
copy), plus the features of the slices done so far (probe size x the captured layers' widths,
as the one-shot pass holds them).
"""

from __future__ import annotations

from time import perf_counter
from typing import Callable

from sentrycam.capture.budget import Schedule
from sentrycam.capture.snapshot import PendingSnapshot, ProbeRunner
from sentrycam.protocol.messages import Message


class SnapshotPacer:
    """Starts, advances and finishes the snapshots of one run; ``send`` gets the messages of
    each finished snapshot (:meth:`ProbeRunner.finish`). ``by_epoch``: snapshots come at epoch
    ends, about ``schedule.controller.min_intervals["snapshot"]`` steps apart."""

    def __init__(self, run_id: str, runner: ProbeRunner | None, schedule: Schedule,
                 by_epoch: bool, send: Callable[[list[Message]], None]) -> None:
        self.run_id, self.runner, self.schedule = run_id, runner, schedule
        self.by_epoch, self.send = by_epoch, send
        self.controller = schedule.controller
        self.pending: PendingSnapshot | None = None

    def start(self, step: int, epoch: int, spread: bool = True) -> bool:
        """Start the snapshot of ``step`` and run its first slice (``spread``), or all of it;
        False (nothing done) when ``step`` already has one."""
        if self.schedule.last["snapshot"] == step:
            return False  # never two snapshots of one step
        self.finish()  # the previous one, if a new one comes before it is through
        self.schedule.fired("snapshot", step)
        started = perf_counter()
        if not spread:
            self.send(self.runner.take(self.run_id, step, epoch))
            self.controller.charge("snapshot", perf_counter() - started)
            return True
        self.pending = self.runner.begin(step, epoch)
        self.controller.spend(self.pending.seconds)
        if self.pending.weights is None:  # too large to copy: the pass ran at once
            self._send()
        else:
            self.advance(step)
        return True

    def advance(self, step: int) -> None:
        """Run the pending snapshot's next slice at ``step``; send it once the probe is through."""
        pending = self.pending
        if pending is None:
            return
        if self.by_epoch:
            steps_left = int(self.controller.min_intervals["snapshot"]) - (step - pending.step)
        else:
            steps_left = self.schedule.next["snapshot"] - step
        count = self.runner.slice_size(pending, steps_left, self.controller.step_time)
        before = pending.seconds
        done = self.runner.advance(pending, count)
        self.controller.spend(pending.seconds - before)
        if done:
            self._send()

    def finish(self) -> None:
        """Run what is left of the pending snapshot at once and send it."""
        pending = self.pending
        if pending is not None:
            before = pending.seconds
            if pending.weights is not None:
                self.runner.advance(pending, len(self.runner.probe) - pending.done)
            self.controller.spend(pending.seconds - before)
            self._send()

    def _send(self) -> None:
        pending, self.pending = self.pending, None
        self.controller.record("snapshot", pending.seconds)
        self.send(self.runner.finish(self.run_id, pending))
