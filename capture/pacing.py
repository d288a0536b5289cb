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

from sentrycam.capture.budget import MIN_MAP_SAMPLES, Schedule
from sentrycam.capture.snapshot import PendingSnapshot, ProbeRunner
from sentrycam.protocol.messages import Message


class SnapshotPacer:
    """Starts, advances and finishes the snapshots of one run; ``send`` gets the messages of
    each finished snapshot (:meth:`ProbeRunner.finish`). ``by_epoch``: snapshots come at epoch ends, about
    ``schedule.controller.min_intervals["snapshot"]`` steps apart.

    Probe size: with a budget, a spread snapshot covers as many probe samples (a class-
    stratified prefix, see :class:`ProbeRunner`) as the snapshot's share of the budget pays for
    until the next snapshot is due, at least ``MIN_MAP_SAMPLES``; the target is revised at each
    slice as the costs are measured. The controller learns each snapshot's cost scaled to the
    whole probe, so that it spaces snapshots as for the whole probe and the minimum cadence,
    when it caps that spacing, gets smaller maps instead of fewer. ``reduced`` is
    ``(samples, probe size)`` of the latest snapshot that covered less than the probe.
    """

    def __init__(self, run_id: str, runner: ProbeRunner | None, schedule: Schedule,
                 by_epoch: bool, send: Callable[[list[Message]], None]) -> None:
        self.run_id, self.runner, self.schedule = run_id, runner, schedule
        self.by_epoch, self.send = by_epoch, send
        self.controller = schedule.controller
        self.pending: PendingSnapshot | None = None
        self.reduced: tuple[int, int] | None = None

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
        full = len(self.runner.probe)
        self.pending = self.runner.begin(step, epoch, self._target(step, full, 0))
        self.controller.spend(self.pending.seconds)
        if self.pending.weights is None:  # too large to copy: the pass ran at once
            self._send()
        else:
            self.advance(step)
        return True

    def _interval(self, step: int) -> int:
        """Steps from the snapshot of ``step`` to the next one."""
        if self.by_epoch:
            return int(self.controller.min_intervals["snapshot"])
        return self.schedule.next["snapshot"] - step

    def _target(self, step: int, current: int, done: int) -> int:
        """Probe samples the snapshot of ``step`` can afford (see the class docstring);
        ``current`` while nothing is measured or there is no budget."""
        allowance = self.controller.allowance("snapshot")
        affordable = (self.runner.affordable(allowance * self._interval(step))
                      if allowance is not None else None)
        if affordable is None:
            return current
        return max(min(len(self.runner.probe), max(affordable, MIN_MAP_SAMPLES)), done)

    def advance(self, step: int) -> None:
        """Run the pending snapshot's next slice at ``step``; send it once the probe is through."""
        pending = self.pending
        if pending is None:
            return
        pending.target = self._target(pending.step, pending.target, pending.done)
        steps_left = self._interval(pending.step) - (step - pending.step)
        count = self.runner.slice_size(pending, steps_left, self.controller.step_estimate)
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
                self.runner.advance(pending, pending.target - pending.done)
            self.controller.spend(pending.seconds - before)
            self._send()

    def _send(self) -> None:
        pending, self.pending = self.pending, None
        started = perf_counter()
        messages = self.runner.finish(self.run_id, pending)
        seconds = pending.seconds + perf_counter() - started
        self.controller.spend(perf_counter() - started)
        full = len(self.runner.probe)
        self.controller.record("snapshot", seconds * full / max(pending.done, 1))
        if pending.done < full:
            self.reduced = (pending.done, full)
        self.send(messages)
