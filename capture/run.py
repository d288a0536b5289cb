"""The :class:`Run`: the handle ``attach`` returns, and the hooks that watch a model training.

Everything the run does happens in hooks: optimizer step hooks (step counting, loss, learning
rate, telemetry, snapshots), forward hooks on the captured layers (idle except on activation
statistics steps and during the probe forward) and a forward hook on the criterion. Every hook
body is wrapped: the first exception logs one warning, sends an ``Event("capture_disabled")`` and
sets a flag that every hook checks first (:class:`Guard`); nothing ever raises into the
training loop. A snapshot's probe pass runs in slices over the steps after its step, at the
weights of that step (:mod:`sentrycam.capture.pacing`).

The only module-level state is ``ACTIVE``, a ``weakref.WeakKeyDictionary`` from a model to a
weak reference to its active run: attaching again to the same model (a re-run notebook cell)
detaches the previous run first instead of doubling the hooks. Both sides are weak, so neither
keeps the other alive.
"""

from __future__ import annotations

import atexit
import functools
import logging
import time
import weakref
from time import perf_counter
from typing import Any

import torch
from torch import nn

from sentrycam.capture.alert_actions import AlertCallback, AlertInbox
from sentrycam.capture.budget import OverheadController, Schedule
from sentrycam.capture.guard import Guard
from sentrycam.capture.layers import IDLE, STATS, LayerTap
from sentrycam.protocol.messages import Event, RunEnd, RunStart, Scalars
from sentrycam.capture.outbox import Outbox
from sentrycam.capture.pacing import SnapshotPacer
from sentrycam.capture.snapshot import ProbeRunner
from sentrycam.capture.steps import StepReporter, logged_value
from sentrycam.capture.telemetry import LossWatch, OptimizerWatch, learning_rates
from sentrycam.capture.transport import Transport, TransportCounters

log = logging.getLogger(__name__)

ACTIVE: "weakref.WeakKeyDictionary[nn.Module, weakref.ref]" = weakref.WeakKeyDictionary()

STATUS_EVERY_S = 2.0
FLUSH_TIMEOUT_S = 10.0
END_STATUSES = ("finished", "detached", "failed")


class Run:
    """A watched training run. Public: ``run_id``, ``url`` (dashboard base URL, None with a
    custom transport), ``step`` (optimizer steps taken), ``layers``, ``probe_size``,
    ``overhead`` (measured fraction of wall time spent in capture: every step's hooks,
    snapshots, the sender thread's CPU time), ``overhead_budget``, :meth:`log`,
    :meth:`detach`, :meth:`counters`; usable as a context manager."""

    def __init__(self, model: nn.Module, *, run_id: str, name: str, transport: Transport,
                 owns_transport: bool, url: str | None, guard: Guard, taps: list[LayerTap],
                 runner: ProbeRunner | None, every: int | str,
                 stats_every: int, budget: float | None, minimum_cadence: bool,
                 criterion: nn.Module | None,
                 optimizer: torch.optim.Optimizer | None, config: dict[str, Any],
                 on_alert: AlertCallback | None = None) -> None:
        self.run_id, self.url, self._model = run_id, url, model
        self._transport, self._owns_transport = transport, owns_transport
        self._guard, self._taps, self._runner = guard, taps, runner
        self._every, self._closed, self._stats_armed = every, False, False
        # Steps taken: a message labels a step ``self._steps`` while it runs (and in its
        # post-hook), ``self._steps - 1`` between steps. _epoch: int | None.
        self._steps, self._epoch_start, self._epoch = 0, 0, None
        self._last_status = perf_counter()
        # Quiet steps (see _after_step) run while step < _quiet_until and perf_counter() <
        # _quiet_deadline (0: the first step is full); the controller hears of them at the next
        # full step: their number (steps since _last_full) and always-on seconds.
        self._quiet_until, self._quiet_deadline = 0, 0.0
        self._last_full, self._quiet_seconds = -1, 0.0
        minimum = {"snapshot": 1 if every == "epoch" else every, "telemetry": 1,
                   "activations": stats_every}
        self._controller = OverheadController(budget, minimum)
        self._schedule = Schedule(self._controller, minimum, minimum_cadence)
        self._outbox = Outbox(run_id, transport, self._schedule)
        self._send, self._send_all = self._outbox.send, self._outbox.send_all
        self._pacer = SnapshotPacer(run_id, runner, self._schedule, every == "epoch",
                                    self._send_all)
        self._loss = LossWatch(criterion, guard) if criterion is not None else None
        self._reporter = StepReporter(run_id, model, self._loss, self._telemetry_due)
        self._held = self._reporter.held  # appended to by the quiet path
        guard.on_fail = self._on_fail
        self._inbox = AlertInbox(on_alert, self._wake) if on_alert is not None else None
        if self._inbox is not None and hasattr(transport, "set_alert_callback"):
            transport.set_alert_callback(self._inbox.receive)
        elif self._inbox is not None:
            log.warning("sentrycam: this transport cannot carry alerts back; on_alert is never "
                        "called")
        self._send(RunStart(run_id=run_id, name=name, started_at=time.time(), config={
            **config, "param_layers": list(self._reporter.telemetry.layers)}))
        if runner is not None:
            self._send(runner.probe.message(run_id))
        self._arm_stats()
        self._watch = OptimizerWatch(model.parameters(), self._before_step, self._after_step,
                                     guard)
        self._watch.start(optimizer)
        ACTIVE[model] = weakref.ref(self)
        self._at_exit = functools.partial(_detach_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    @classmethod
    def inactive(cls, rank: int) -> Run:
        """A run that captures nothing (a non-zero rank under torch.distributed)."""
        run = cls.__new__(cls)
        run.run_id, run.url, run._closed, run._steps, run._inbox = None, None, True, 0, None
        run._taps, run._runner, run._controller, run._transport = [], None, None, None
        log.info("sentrycam captures on rank 0 only; rank %d runs unwatched", rank)
        return run

    @property
    def step(self) -> int:
        """Optimizer steps taken (the latest step's messages carry ``run.step - 1``)."""
        return self._steps

    @property
    def _last_step(self) -> int:
        return max(self._steps - 1, 0)

    @property
    def stop_requested(self) -> bool:
        """True once an ``on_alert`` callback called ``control.stop()``."""
        return self._inbox is not None and self._inbox.stop_requested

    def _wake(self) -> None:  # from the sender thread: the next step is a full one
        self._quiet_until = 0

    @property
    def layers(self) -> list[str]:
        return [tap.spec.name for tap in self._taps]

    @property
    def probe_size(self) -> int:
        return len(self._runner.probe) if self._runner is not None else 0

    @property
    def overhead(self) -> float:
        return self._controller.overhead if self._controller is not None else 0.0

    @property
    def overhead_budget(self) -> float | None:
        """The budget ``overhead`` is held to (None: a fixed schedule)."""
        return self._controller.budget if self._controller is not None else None

    def counters(self) -> TransportCounters:
        """The transport's counters (sent, dropped, spooled, queue depth...)."""
        return self._transport.counters() if self._transport is not None else TransportCounters()

    def log(self, **scalars: Any) -> None:
        """Record scalars (``val_loss=0.3, val_acc=0.9``) at the last completed step: call it
        after ``optimizer.step()``. ``epoch=`` sets the current epoch (and takes the snapshot of
        ``every="epoch"`` runs when it changes). ValueError for a value that is not a number."""
        values = {key: logged_value(key, value) for key, value in scalars.items()}
        epoch = values.get("epoch")
        if epoch is not None and epoch != int(epoch):
            raise ValueError(f"run.log(epoch=...) needs a whole number, got {scalars['epoch']!r}")
        if self._closed or self._guard.disabled:
            return
        self._send_all(self._reporter.release_batch())  # the training curve up to now first
        if values:
            self._send(Scalars(run_id=self.run_id, step=self._last_step, wall_time=time.time(),
                               values=values))
        if epoch is not None and int(epoch) != self._epoch:  # the first epoch= is a change
            self._new_epoch(int(epoch))

    def snapshot(self) -> None:
        """Take a snapshot now, labelled with the last completed step (e.g. once training is
        over, or before it starts); nothing if that step already has one."""
        if self._closed or self._guard.disabled or self._runner is None:
            return
        try:
            self._pacer.finish()
            self._snapshot(self._last_step, spread=False)
        except Exception as exc:
            self._guard.fail("a snapshot", exc)

    def dashboard(self, *, token: str | None = None, webgl: bool = True) -> Any:
        """Show this run's live panels inline in Jupyter (embedding view, heatmaps, curves,
        alerts), read from the server this run streams to; returns the Panel object.
        ``webgl=False`` draws the 2D maps on a plain canvas (faster without a GPU)."""
        if self.url is None:
            raise RuntimeError("this run has no server URL (a custom transport or rank > 0); "
                               "use sentrycam.frontend.show(url=..., run_id=...) instead")
        from sentrycam import frontend  # the web stack, only when a dashboard is asked for
        return frontend.show(url=self.url, run_id=self.run_id, token=token, webgl=webgl)

    def detach(self, status: str = "finished") -> None:
        """Remove every hook, send the last Status and RunEnd(``status``), flush the transport."""
        if status not in END_STATUSES:
            raise ValueError(f"status must be one of {END_STATUSES}, got {status!r}")
        if self._closed:
            return
        self._closed = True
        self._remove_hooks()
        try:
            if not self._guard.disabled:
                self._pacer.finish()
            self._send_all(self._reporter.flush())  # steps held back, even before a failure
            # Drain the queue first, so that the closing Status and RunEnd find room in it.
            self._transport.flush(FLUSH_TIMEOUT_S / 2)
            self._send_status(self._last_step, ending=True)
            self._send(RunEnd(run_id=self.run_id, step=self._last_step, status=status))
            self._transport.flush(FLUSH_TIMEOUT_S)
            if self._owns_transport:
                self._transport.close()
        except Exception:
            log.warning("sentrycam hit an error while detaching run %s", self.run_id,
                        exc_info=True)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.detach("failed" if exc_type is not None else "finished")

    def _telemetry_due(self) -> bool:
        """Whether the coming optimizer step (number ``self._steps``) is a telemetry step."""
        return not (self._steps < self._quiet_until or self._guard.disabled
                    or self._steps < self._schedule.next["telemetry"])

    def _before_step(self, optimizer: Any, args: Any = None, kwargs: Any = None) -> None:
        """The optimizer pre-hook (torch's signature): starts the telemetry of telemetry steps."""
        if not self._telemetry_due():  # a few comparisons: too cheap to be worth timing
            return
        try:
            self._reporter.before_step()
        except Exception as exc:
            self._guard.fail("the optimizer pre-step hook", exc)

    def _after_step(self, optimizer: Any, args: Any = None, kwargs: Any = None) -> None:
        """The optimizer post-hook (torch's signature). Most steps are quiet (see
        :meth:`_plan_quiet`): the step's loss and learning rate join the reporter's held batch
        and the time spent is added up; everything else happens in :meth:`_full_step`.

        The quiet path is :meth:`StepReporter.hold` written out: right after the backward pass
        none of this code is in the CPU caches, and one call more costs about a microsecond,
        a sizeable part of the whole. Unlike ``hold`` it does not check for a GPU loss: a GPU
        run leaves a device copy pending at every full step, so it has no quiet steps (except
        right after the model moves to the GPU, where ``item()`` then waits for the device).
        """
        start = perf_counter()
        step = self._steps
        try:
            if step < self._quiet_until and start < self._quiet_deadline:
                watch, loss = self._loss, None
                if watch is not None:
                    loss = watch.latest
                    if loss is not None:
                        watch.latest = None
                        try:  # cheaper than looking at ndim first, a call into torch
                            loss = loss.item()
                        except RuntimeError:  # an unreduced loss: its mean, as in hold()
                            loss = LossWatch.scalar(loss).item()
                groups = optimizer.param_groups
                rate = groups[0].get("lr") if len(groups) == 1 else None
                if type(rate) is not float:
                    rate = learning_rates(optimizer)
                self._held.append((step, start, loss, rate))
                self._quiet_seconds += perf_counter() - start
                return
            if not self._guard.disabled:  # disabled: still counted, so that run.step and
                self._full_step(optimizer, step, start)  # RunEnd stay true
        except Exception as exc:
            self._guard.fail("the optimizer post-step hook", exc)
        finally:
            self._steps = step + 1

    def _full_step(self, optimizer: Any, step: int, start: float) -> None:
        """Everything a step may need: statistics, the controller's boundary, the step's
        messages, a snapshot, arming statistics for the next step, Status; then plans the
        quiet steps that follow."""
        # Statistics were computed in this step's forward: charge them before the boundary,
        # to the window they were spent in.
        stats = self._collect_stats(step) if self._stats_armed else []
        steps, quiet_seconds = step - self._last_full, self._quiet_seconds
        self._last_full, self._quiet_seconds = step, 0.0
        if self._controller.step_boundary(start, steps, quiet_seconds):
            self._schedule.refresh()
        self._record_step(optimizer, step, start, stats)
        if self._pacer.pending is not None:
            self._pacer.advance(step)
        if step >= self._schedule.next["snapshot"] and self._runner is not None \
                and self._every != "epoch":
            self._snapshot(step)
        if step + 1 >= self._schedule.next["activations"]:
            self._arm_stats()
        if start - self._last_status >= STATUS_EVERY_S:
            self._send_status(step)
        self._plan_quiet(step, start)
        if self._inbox:  # opt-in alert callback, on this (the training) thread
            self._inbox.deliver(optimizer)

    def _plan_quiet(self, step: int, now: float) -> None:
        """Set the steps after ``step`` that may be quiet: before the next scheduled activity
        (statistics are armed one step early), the step that fills the batch, the next Status
        and the batch's age limit; none while statistics are armed, a device copy is pending or
        the controller has a new cost to take into account at the next boundary.

        The pre-hook stays registered only if a telemetry step can come before the next full
        step replans: the first step at or after ``_quiet_until`` is a full one, and it never
        passes the next telemetry step. The clip watch's gradient hooks go while telemetry is
        far ahead (:meth:`sentrycam.capture.clipping.ClipWatch.plan`)."""
        (room, deadline), due = self._reporter.quiet_window(now), self._schedule.next
        if room <= 0 or self._stats_armed or self._controller.recompute_pending \
                or self._pacer.pending is not None:
            until = step + 1
        else:
            until = min(step + 1 + room, due["telemetry"])
            if self._taps:
                until = min(until, due["activations"] - 1)
            if self._runner is not None and self._every != "epoch":
                until = min(until, due["snapshot"])
            self._quiet_deadline = min(deadline, self._last_status + STATUS_EVERY_S)
        until = self._reporter.telemetry.clip.plan(step, due["telemetry"], until)
        self._quiet_until = until
        self._watch.want_pre(until >= due["telemetry"])

    def _record_step(self, optimizer: Any, step: int, start: float,
                     stats: list[tuple[str, torch.Tensor]]) -> None:
        """Send the step's messages and charge their cost: telemetry and the always-on rest."""
        telemetry_step = self._reporter.telemetry_due
        self._send_all(self._reporter.after_step(optimizer, step, stats, start))
        elapsed = perf_counter() - start
        if telemetry_step:
            self._controller.charge("telemetry", self._reporter.telemetry_seconds)
            self._schedule.fired("telemetry", step)
            elapsed -= self._reporter.telemetry_post_seconds
        self._controller.charge(None, elapsed)

    def _collect_stats(self, step: int) -> list[tuple[str, torch.Tensor]]:
        """Activation statistics of the step's training forward; the taps' hooks go away."""
        self._stats_armed = False
        fired = [tap for tap in self._taps if tap.stats is not None]
        for tap in self._taps:
            tap.disarm()
        if fired:
            self._controller.charge("activations", sum(tap.stats_seconds for tap in fired))
            self._schedule.fired("activations", step)
        return [(tap.spec.name, tap.stats) for tap in fired]

    def _arm_stats(self) -> None:
        if self._taps and not self._stats_armed:
            for tap in self._taps:
                tap.arm(STATS)
            self._stats_armed = True

    def _send_status(self, step: int, ending: bool = False) -> None:
        self._last_status = perf_counter()
        self._outbox.status(step, self._runner is not None, ending, self._pacer.reduced)

    def _snapshot(self, step: int, spread: bool = True) -> None:
        if self._pacer.start(step, self._epoch or 0, spread):
            self._quiet_until = 0  # a new cost for the controller: the next step is a full one

    def _new_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        if self._every != "epoch" or self._runner is None:
            return
        try:
            self._controller.set_min_interval("snapshot", self._steps - self._epoch_start)
            self._quiet_until = 0  # the controller recomputes at the next (full) step
            self._epoch_start = self._steps
            if self._schedule.due("snapshot", self._last_step):
                self._snapshot(self._last_step)
        except Exception as exc:
            self._guard.fail("the epoch snapshot", exc)

    def _on_fail(self, where: str, exc: BaseException) -> None:
        self._quiet_until = -1  # first: the quiet path does not check the guard
        for tap in self._taps:
            tap.mode = IDLE  # the hooks stay registered until detach: never removed from a hook
        self._send(Event(run_id=self.run_id, step=self._steps, wall_time=time.time(),
                         event="capture_disabled",
                         message=f"capture disabled after an error in {where}: {exc!r}",
                         payload={"where": where, "error": repr(exc)}))

    def _remove_hooks(self) -> None:
        for tap in self._taps:
            tap.disarm()
        if self._loss is not None:
            self._loss.remove()
        self._watch.stop()
        self._reporter.telemetry.close()
        if ACTIVE.get(self._model, lambda: None)() is self:
            del ACTIVE[self._model]
        atexit.unregister(self._at_exit)


def _detach_at_exit(ref: weakref.ref) -> None:
    run = ref()
    if run is not None:
        run.detach("detached")

