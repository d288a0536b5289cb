"""``attach(model, ...)``: watch a model while it trains; the returned :class:`Run` is the handle.

Everything the run does happens in hooks: optimizer step hooks (step counting, loss, learning
rate, telemetry, snapshots), forward hooks on the captured layers (idle except on activation
statistics steps and during the probe forward) and a forward hook on the criterion. Every hook
body is wrapped: the first exception logs one warning, sends an ``Event("capture_disabled")`` and
sets a flag that every hook checks first; nothing ever raises into the training loop.

The only module-level state is ``_ACTIVE``, a ``weakref.WeakKeyDictionary`` from a model to a
weak reference to its active run: attaching again to the same model (a re-run notebook cell)
detaches the previous run first instead of doubling the hooks. Both sides are weak, so neither
keeps the other alive.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import sys
import time
import uuid
import weakref
from pathlib import Path
from time import perf_counter
from typing import Any

import torch
from torch import nn

from sentrycam.capture.alert_actions import AlertCallback, AlertInbox
from sentrycam.capture.budget import OverheadController, Schedule, check_schedule
from sentrycam.capture.layers import IDLE, STATS, LayerTap, check_token_pool, choose_layers
from sentrycam.capture.messages import (SCHEMA_VERSION, Event, Message, RunEnd, RunStart,
                                        Scalars, Status)
from sentrycam.capture.probe import build_probe, check_probe_arguments
from sentrycam.capture.snapshot import ProbeRunner
from sentrycam.capture.steps import StepReporter, logged_value, nonfinite_counts
from sentrycam.capture.telemetry import (LossWatch, OptimizerWatch, check_training_parts,
                                         learning_rates)
from sentrycam.capture.transport import Transport, TransportCounters

log = logging.getLogger(__name__)

_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, weakref.ref]" = weakref.WeakKeyDictionary()

DEFAULT_EVERY = 50
DEFAULT_STATS_EVERY = 10
STATUS_EVERY_S = 2.0
FLUSH_TIMEOUT_S = 10.0
END_STATUSES = ("finished", "detached", "failed")


class Guard:
    """Failure containment shared by every hook: the first exception disables capture."""

    def __init__(self) -> None:
        self.disabled = False
        self.errors = 0
        self.on_fail: Any = None

    def fail(self, where: str, exc: BaseException) -> None:
        self.errors += 1
        if self.disabled:
            return
        self.disabled = True
        log.warning("sentrycam capture is disabled after an error in %s; training continues "
                    "unwatched", where, exc_info=(type(exc), exc, exc.__traceback__))
        if self.on_fail is not None:
            try:
                self.on_fail(where, exc)
            except Exception:  # reporting the failure must not fail in turn
                log.debug("could not report the capture failure", exc_info=True)


class Run:
    """A watched training run. Public: ``run_id``, ``url`` (dashboard base URL, None with a
    custom transport), ``step`` (optimizer steps taken), ``layers``, ``probe_size``,
    ``overhead`` (measured fraction of wall time spent in capture), :meth:`log`,
    :meth:`detach`, :meth:`counters`; usable as a context manager."""

    def __init__(self, model: nn.Module, *, run_id: str, name: str, transport: Transport,
                 owns_transport: bool, url: str | None, guard: Guard, taps: list[LayerTap],
                 runner: ProbeRunner | None, every: int | str,
                 stats_every: int, budget: float | None, criterion: nn.Module | None,
                 optimizer: torch.optim.Optimizer | None, config: dict[str, Any],
                 on_alert: AlertCallback | None = None) -> None:
        self.run_id, self.url, self._model = run_id, url, model
        self._transport, self._owns_transport = transport, owns_transport
        self._guard, self._taps, self._runner = guard, taps, runner
        self._every, self._closed, self._stats_armed = every, False, False
        # Steps taken; messages label a step by its 0-based index, so while a step runs (and
        # in its post-hook) its label is ``self._steps``, and between steps the last one is
        # ``self._steps - 1``.
        self._steps, self._epoch_start = 0, 0
        self._epoch: int | None = None
        self._flagged: set[str] = set()
        self._last_status = perf_counter()
        # Quiet steps (see _after_step) run while step < _quiet_until and perf_counter() <
        # _quiet_deadline; 0 makes the first step a full one. The controller hears of them at
        # the next full step: their number (steps since _last_full) and always-on seconds.
        self._quiet_until, self._quiet_deadline = 0, 0.0
        self._last_full, self._quiet_seconds = -1, 0.0
        every_steps = 1 if every == "epoch" else every
        minimum = {"snapshot": every_steps, "telemetry": 1, "activations": stats_every}
        self._controller = OverheadController(budget, minimum)
        self._schedule = Schedule(self._controller, minimum)
        self._loss = LossWatch(criterion, guard) if criterion is not None else None
        self._reporter = StepReporter(run_id, model, self._loss)
        self._held = self._reporter.held  # appended to by the quiet path
        guard.on_fail = self._on_fail
        self._inbox = AlertInbox(on_alert, self._wake) if on_alert is not None else None
        if self._inbox is not None:
            if hasattr(transport, "set_alert_callback"):
                transport.set_alert_callback(self._inbox.receive)
            else:
                log.warning("sentrycam: this transport cannot carry alerts back; on_alert is "
                            "never called")
        self._send(RunStart(run_id=run_id, name=name, started_at=time.time(), config={
            **config, "param_layers": list(self._reporter.telemetry.layers)}))
        if runner is not None:
            self._send(runner.probe.message(run_id))
        self._arm_stats()
        self._watch = OptimizerWatch(model.parameters(), self._before_step, self._after_step,
                                     guard)
        self._watch.start(optimizer)
        _ACTIVE[model] = weakref.ref(self)
        self._at_exit = functools.partial(_detach_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    @classmethod
    def inactive(cls, rank: int) -> Run:
        """A run that captures nothing (a non-zero rank under torch.distributed)."""
        run = cls.__new__(cls)
        run.run_id, run.url, run._closed, run._steps = None, None, True, 0
        run._inbox = None
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

    def _wake(self) -> None:
        self._quiet_until = 0  # from the sender thread: the next step is a full one

    @property
    def layers(self) -> list[str]:
        return [tap.spec.name for tap in self._taps]

    @property
    def probe_size(self) -> int:
        return len(self._runner.probe) if self._runner is not None else 0

    @property
    def overhead(self) -> float:
        return self._controller.overhead if self._controller is not None else 0.0

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
            self._snapshot(self._last_step)
        except Exception as exc:
            self._guard.fail("a snapshot", exc)

    def dashboard(self, *, token: str | None = None) -> Any:
        """Show this run's live panels inline in Jupyter (embedding view, heatmaps, curves,
        alerts), read from the server this run streams to; returns the Panel object."""
        if self.url is None:
            raise RuntimeError("this run has no server URL (a custom transport or rank > 0); "
                               "use sentrycam.frontend.show(url=..., run_id=...) instead")
        from sentrycam import frontend  # the web stack, only when a dashboard is asked for
        return frontend.show(url=self.url, run_id=self.run_id, token=token)

    def detach(self, status: str = "finished") -> None:
        """Remove every hook, send the last Status and RunEnd(``status``), flush the transport."""
        if status not in END_STATUSES:
            raise ValueError(f"status must be one of {END_STATUSES}, got {status!r}")
        if self._closed:
            return
        self._closed = True
        self._remove_hooks()
        try:
            self._send_all(self._reporter.flush())  # steps held back, even before a failure
            # Drain the queue first, so that the closing Status and RunEnd find room in it.
            self._transport.flush(FLUSH_TIMEOUT_S / 2)
            self._send_status(self._last_step)
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

    def _before_step(self, optimizer: Any, args: Any = None, kwargs: Any = None) -> None:
        """The optimizer pre-hook (torch's signature): starts the telemetry of telemetry steps."""
        # Off telemetry steps this is one to three comparisons: too cheap to be worth timing.
        step = self._steps
        if step < self._quiet_until or self._guard.disabled \
                or step < self._schedule.next["telemetry"]:
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
        step replans: the first step at or after ``_quiet_until`` is a full one, and
        ``_quiet_until`` never passes the next telemetry step.
        """
        room, deadline = self._reporter.quiet_window(now)
        due = self._schedule.next
        if room <= 0 or self._stats_armed or self._controller.recompute_pending:
            until = step + 1
        else:
            until = min(step + 1 + room, due["telemetry"])
            if self._taps:
                until = min(until, due["activations"] - 1)
            if self._runner is not None and self._every != "epoch":
                until = min(until, due["snapshot"])
            self._quiet_deadline = min(deadline, self._last_status + STATUS_EVERY_S)
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

    def _send(self, message: Message) -> None:
        self._transport.send(message)

    def _send_all(self, messages: list[Message]) -> None:
        """Send, and flag NaN/Inf once per layer or signal: they are data, not failures."""
        for message in messages:
            self._transport.send(message)
            for what, count in nonfinite_counts(message).items():
                if what not in self._flagged:
                    self._flag(what, message.step, count)

    def _flag(self, what: str, step: int, count: int) -> None:
        self._flagged.add(what)
        log.warning("sentrycam: %s has NaN/Inf values at step %d", what, step)
        self._send(Event(run_id=self.run_id, step=step, wall_time=time.time(), event="nonfinite",
                         message=f"{what} has NaN/Inf values at step {step}",
                         payload={"layer": what, "count": count}))

    def _send_status(self, step: int) -> None:
        self._last_status = perf_counter()
        counters = self._transport.counters()
        every = self._schedule.interval("snapshot") if self._runner is not None else 0
        self._send(Status(run_id=self.run_id, step=step, dropped=counters.dropped,
                          spooled=counters.spooled, overhead=self._controller.overhead,
                          snapshot_every=every, queue_depth=counters.queue_depth))

    def _snapshot(self, step: int) -> None:
        if self._schedule.last["snapshot"] == step:
            return  # never two snapshots of one step
        start = perf_counter()
        self._send_all([self._runner.take(self.run_id, step, self._epoch or 0)])
        self._schedule.fired("snapshot", step)
        self._controller.charge("snapshot", perf_counter() - start)
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
        if _ACTIVE.get(self._model, lambda: None)() is self:
            del _ACTIVE[self._model]
        atexit.unregister(self._at_exit)


def _announce(text: str) -> None:
    """Tell the user where the dashboard is: through logging when the application configured
    it, else once on stderr, because a plain script shows no INFO log and this line matters."""
    if logging.getLogger("sentrycam").hasHandlers():
        log.info(text)
    else:
        sys.stderr.write(text + "\n")


def _detach_at_exit(ref: weakref.ref) -> None:
    run = ref()
    if run is not None:
        run.detach("detached")


def attach(model: nn.Module, probe: Any = None, *, layers: list[str] | None = None,
           every: int | str | None = None, criterion: nn.Module | None = None,
           optimizer: torch.optim.Optimizer | None = None, url: str | None = None,
           db: str | os.PathLike | None = None, run_name: str | None = None,
           overhead_budget: float | None = 0.01, heldout: Any = None, probe_size: int = 2000,
           token: str | None = None, transport: Transport | None = None, seed: int = 0,
           token_pool: str = "mean", stats_every: int = DEFAULT_STATS_EVERY,
           on_alert: AlertCallback | None = None) -> Run:
    """Watch ``model`` while it trains; returns the :class:`Run` handle.

    ``probe``: ``(inputs [N, ...], labels int [N] or None)``, a map-style Dataset or a DataLoader
    (its dataset); at most ``probe_size`` samples are kept, class-stratified with ``seed``.
    ``heldout``: the same, stored as the held-out split. Without a probe there are no snapshots.
    ``layers``: module names (``"features.3"``, ``"fc:input"``); default: the classifier's input
    and blocks at 25/50/75% depth. ``every``: snapshot interval in optimizer steps (default 50),
    or ``"epoch"`` (a snapshot when ``run.log(epoch=...)`` changes the epoch); the budget can only
    stretch it. ``criterion``: an nn.Module whose output is the loss (hooked); otherwise call
    ``run.log(loss=...)``. ``optimizer``: the model's optimizer; otherwise the first optimizer
    that steps the model's parameters is adopted (after replacing it, attach again).
    ``url`` (or env ``SENTRYCAM_URL``): stream to that server; ``db``: a DuckDB file served by a
    local server started on demand; neither: ``./sentrycam-runs/sentrycam.duckdb``. ``token`` (or
    env ``SENTRYCAM_TOKEN``): the server's token. ``overhead_budget``: fraction of step time that
    capture may use (None: fixed schedule). ``token_pool``: ``"mean"`` or ``"cls"`` for token
    sequences. ``stats_every``: minimum interval of activation statistics.
    ``transport`` (advanced): a Transport to use instead of a server. ``on_alert`` (opt-in):
    ``callback(alert, control)`` called on the training thread for each alert the server's audit
    engine raises on this run; ``control.lower_lr(f)`` / ``control.stop()`` (see
    :mod:`sentrycam.capture.alert_actions`). Default: alerts are only reported.

    Steps are counted in optimizer steps; every message carries the 0-based index of its step,
    and a snapshot labelled ``s`` shows the model right after the update of step ``s``
    (snapshots at ``s % every == 0``). Bad arguments raise ValueError naming the problem and
    the fix.
    """
    check_training_parts(model, criterion, optimizer)
    every = check_schedule(every, overhead_budget, stats_every, DEFAULT_EVERY)
    check_probe_arguments(probe, heldout, probe_size)
    check_token_pool(token_pool)
    if on_alert is not None and not callable(on_alert):
        raise ValueError("on_alert must be a callable taking (alert, control)")
    if transport is not None and not isinstance(transport, Transport):
        raise ValueError("transport must implement send/flush/close/counters (see "
                         "sentrycam.capture.transport.Transport)")
    if url is not None and db is not None:
        raise ValueError("pass url= (a running server) or db= (a local server for that file), "
                         "not both")
    rank, world_size = _distributed_rank()
    if rank != 0:
        return Run.inactive(rank)
    previous = _ACTIVE.get(model)
    if previous is not None and previous() is not None:
        previous().detach("detached")
    device = next(model.parameters()).device
    specs = choose_layers(model, layers)
    probe_set = (build_probe(probe, heldout, probe_size, seed, pin=device.type == "cuda")
                 if probe is not None else None)
    guard = Guard()
    modules = dict(model.named_modules())
    taps = [LayerTap(spec, modules[spec.module_name], token_pool=token_pool, seed=seed,
                     on_error=guard.fail) for spec in specs]
    run_id = uuid.uuid4().hex
    try:
        runner = ProbeRunner(model, probe_set, taps, device) if probe_set is not None else None
        if runner is not None:
            runner.check()
        owns = transport is None
        if owns:
            transport, url = _open_transport(run_id, url, db, token)
    except BaseException:
        for tap in taps:
            tap.disarm()
        raise
    config = {
        "schema": SCHEMA_VERSION, "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__,
        "device": str(device), "layers": [tap.describe() for tap in taps],
        "probe_size": len(probe_set) if probe_set is not None else 0,
        "heldout_size": int(probe_set.split.sum()) if probe_set is not None else 0,
        "schedule": {"snapshot_every": every, "telemetry_every": 1, "stats_every": stats_every,
                     "adaptive": overhead_budget is not None},
        "overhead_budget": overhead_budget, "token_pool": token_pool, "seed": seed,
        "rank": rank, "world_size": world_size}
    name = run_name or f"{type(model).__name__}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = Run(model, run_id=run_id, name=name, transport=transport, owns_transport=owns,
              url=url, guard=guard, taps=taps, runner=runner, every=every,
              stats_every=stats_every, budget=overhead_budget, criterion=criterion,
              optimizer=optimizer, config=config, on_alert=on_alert)
    if url is not None:
        _announce(f"sentrycam: dashboard at {url} (run {run_id})")
    return run


def _distributed_rank() -> tuple[int, int]:
    """(rank, world size) under torch.distributed, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _open_transport(run_id: str, url: str | None, db: Any, token: str | None
                    ) -> tuple[Transport, str]:
    """A websocket transport to ``url`` / env SENTRYCAM_URL, or to a local server for ``db``."""
    url = url or os.environ.get("SENTRYCAM_URL") or None
    if url is not None:
        spool_root = Path("sentrycam-runs")
    else:
        from sentrycam.capture import launcher

        db_path = Path(db) if db is not None else launcher.default_db_path()
        url = launcher.ensure_local_server(db_path)
        spool_root = db_path.parent
    from sentrycam.capture.sender import WebSocketTransport

    transport = WebSocketTransport(url, run_id, spool_dir=spool_root / "spool",
                                   token=token or os.environ.get("SENTRYCAM_TOKEN") or None)
    return transport, url
