"""Where capture's time goes at attach's defaults: CPU seconds of the training thread per activity.

A short run (300 steps by default, where the minimum cadence decides the schedule) of each
small model of ``overhead_workloads.py`` trains with ``capture.attach`` at its defaults,
streaming to a real local server, and the same model trains without capture just before and
just after it (averaged). The capture code's entry points are wrapped to read
``time.thread_time()`` (the training thread's CPU time: what other processes on the machine do
changes it far less than wall time, though not to nothing: under load a plain CNN step took
14-15 ms of CPU against 10.4 ms on a quiet machine, from cache contention) on entry and exit; each
activity is charged its own time, without the time of the activities it calls. Beside them:
the sender thread's CPU time and wake-ups, the whole training thread's CPU time with and
without capture (their difference is capture's whole cost, the hooks' calls and what no
wrapper sees included), and per activity the number of calls. Torch runs on one thread, so that the
training thread's CPU time is all of training's.

Part of the difference no wrapper sees is the allocator's: glibc hands a freed block at the top
of the heap (or one above its mmap threshold) back to the system, and the next step's tensors
fault their pages in again (each fault a few microseconds here, over 1,000 a step on the CNN,
with or without capture). Capture's temporaries move that churn up or down by chance, so the
training thread's system time and page faults are reported per step for both runs, and
``--allocator fixed`` keeps freed memory in the process (glibc's ``mallopt``) for both runs,
leaving capture's own work in the difference.

``--paired`` measures instead what each kind of watched step costs: a plain and a watched model
train step by step in turn, and each watched step's CPU time is compared with the plain step's
beside it (:func:`paired`); the watched run's own overhead figure means little there (its
step times include the plain model's steps).

    python benchmarks/capture_breakdown.py [--steps 300] [--models cnn mlp] \
        [--allocator system|fixed] [--paired] [--json OUT]
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import resource
import sys
import threading
import time
from collections import defaultdict
from statistics import fmean, median
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead_workloads import Workload, local_server, workloads  # noqa: E402
from results import Recorder, add_json_argument  # noqa: E402

from sentrycam import capture  # noqa: E402
from sentrycam.capture import demo  # noqa: E402
from sentrycam.capture.clipping import ClipWatch  # noqa: E402
from sentrycam.capture.layers import PROBE, LayerTap  # noqa: E402
from sentrycam.capture.outbox import Outbox  # noqa: E402
from sentrycam.capture.run import Run  # noqa: E402
from sentrycam.capture.snapshot import ProbeRunner  # noqa: E402
from sentrycam.capture.steps import StepReporter  # noqa: E402
from sentrycam.capture.param_telemetry import ParamTelemetry  # noqa: E402
from sentrycam.capture.telemetry import LossWatch  # noqa: E402

#: (activity, class, method): each method's own CPU time is charged to its activity (a callable
#: activity names it from the method's object at the call).
ENTRY_POINTS: tuple[tuple[str | Callable[[Any], str], type, str], ...] = (
    ("gradient telemetry", ParamTelemetry, "before_step"),
    ("gradient telemetry", ParamTelemetry, "after_step"),
    ("gradient telemetry (clip watch)", ClipWatch, "_on_gradient"),
    ("gradient telemetry (clip watch)", ClipWatch, "_note"),
    ("gradient telemetry (clip watch)", ClipWatch, "take"),
    (lambda tap: "snapshot: probe slices" if tap.mode == PROBE else "activation statistics",
     LayerTap, "_take"),
    ("activation statistics (arming)", LayerTap, "arm"),
    ("activation statistics (arming)", LayerTap, "disarm"),
    ("snapshot: weight copy", ProbeRunner, "begin"),
    ("snapshot: probe slices", ProbeRunner, "advance"),
    ("snapshot: outputs and float16", ProbeRunner, "finish"),
    ("messages: step messages", StepReporter, "after_step"),
    ("messages: step messages", StepReporter, "release_batch"),
    ("messages: queueing", Outbox, "send_all"),
    ("messages: queueing", Outbox, "send"),
    ("messages: status", Outbox, "status"),
    ("loss hook", LossWatch, "_hook"),
    ("hooks: the rest", Run, "_after_step"),
    ("hooks: the rest", Run, "_before_step"),
)


class CpuLedger:
    """Own (exclusive) thread CPU seconds and calls per activity, for wrapped methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[float] = []  # CPU seconds of the children of each open call

    def wrap(self, activity: str | Callable[[Any], str], method: Callable) -> Callable:
        @functools.wraps(method)
        def timed(owner: Any, *args: Any, **kwargs: Any) -> Any:
            name = activity if isinstance(activity, str) else activity(owner)
            start = time.thread_time()
            self._stack.append(0.0)
            try:
                return method(owner, *args, **kwargs)
            finally:
                spent = time.thread_time() - start
                children = self._stack.pop()
                self.seconds[name] += spent - children
                self.calls[name] += 1
                if self._stack:
                    self._stack[-1] += spent
        return timed


def _installed(ledger: CpuLedger) -> list[tuple[type, str, Callable]]:
    originals = []
    for activity, cls, name in ENTRY_POINTS:
        original = cls.__dict__[name]
        originals.append((cls, name, original))
        setattr(cls, name, ledger.wrap(activity, original))
    return originals


#: glibc's mallopt parameters, and the values ``--allocator fixed`` sets: nothing freed goes back
#: to the system below 256 MiB at the top of the heap, blocks up to 32 MiB come from the heap.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
FIXED_ALLOCATOR = ((M_TRIM_THRESHOLD, 256 << 20), (M_TOP_PAD, 64 << 20),
                   (M_MMAP_THRESHOLD, 32 << 20))


def fix_allocator() -> None:
    """Keep freed memory in this process (see the module docstring); RuntimeError off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as exc:
        raise RuntimeError("--allocator fixed needs glibc") from exc
    for param, value in FIXED_ALLOCATOR:
        if libc.mallopt(param, value) != 1:
            raise RuntimeError(f"mallopt({param}, {value}) failed")


def _thread_usage() -> tuple[float, int]:
    """(system CPU seconds, minor page faults) of the calling thread so far."""
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_stime, usage.ru_minflt


def _sender_wakeups() -> int | None:
    """How often the sender thread went to sleep and woke up so far (its voluntary context
    switches; None where /proc does not tell): each wake-up takes the trainer's core for a
    moment when the two share it."""
    for thread in threading.enumerate():
        if thread.name == "sentrycam-sender" and thread.native_id is not None:
            try:
                status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
            except OSError:
                return None
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    return None


def _trainer(work: Workload, db: Path | None) -> tuple[Run | None, Callable[..., None]]:
    """A fresh seeded model of ``work`` (watched at attach's defaults when ``db`` is given):
    its run (None unwatched) and a function that takes one training step on a batch."""
    model = work.build(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    criterion = nn.CrossEntropyLoss()
    run = None
    if db is not None:
        run = capture.attach(model, probe=(work.x, work.y), criterion=criterion, db=db,
                             run_name=f"breakdown-{work.name}")

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(xb), yb).backward()
        optimizer.step()
    return run, step


def _train(work: Workload, steps: int, db: Path | None) -> tuple[float, dict]:
    """Train ``work`` for ``steps`` steps (watched when ``db`` is given); returns the training
    thread's CPU seconds over the loop and what the run measured: ``sys_ms_per_step`` and
    ``faults_per_step`` of the training thread, and for a watched run the agent's figures."""
    run, step = _trainer(work, db)
    data = demo.batches(work.x, work.y, batch_size=work.batch_size, seed=0)
    sys_start, faults_start = _thread_usage()
    start = time.thread_time()
    for _, (xb, yb, _) in zip(range(steps), data):
        step(xb, yb)
    cpu = time.thread_time() - start
    sys_end, faults_end = _thread_usage()
    info: dict = {"sys_ms_per_step": 1e3 * (sys_end - sys_start) / steps,
                  "faults_per_step": (faults_end - faults_start) / steps}
    if run is not None:
        info.update(agent_overhead=run.overhead, probe_size=run.probe_size,
                    sender_cpu_s=run.counters().sender_cpu_seconds,
                    sender_wakeups=_sender_wakeups())
        run.detach()
    return cpu, info


def breakdown(work: Workload, steps: int, db: Path) -> dict:
    """One model: plain and watched training CPU time, and the watched run's ledger. The plain
    run goes once before and once after the watched one, and the two are averaged: what other
    work on the machine does to a step's CPU time (cache contention) drifts over a run, and
    on a loaded machine that drift is as large as capture's whole cost."""
    _train(work, 20, None)  # first allocations and kernels, outside the figures
    plain_before, plain_info = _train(work, steps, None)
    ledger = CpuLedger()
    originals = _installed(ledger)
    try:
        watched, info = _train(work, steps, db)
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)
    plain_after, _ = _train(work, steps, None)
    plain = (plain_before + plain_after) / 2
    return {"model": work.name, "steps": steps, "plain_cpu_ms_per_step": 1e3 * plain / steps,
            "plain_drift": plain_after / plain_before - 1,
            "watched_cpu_ms_per_step": 1e3 * watched / steps,
            "capture_share_of_training_cpu": (watched - plain) / plain,
            "activities_ms": {a: 1e3 * s for a, s in sorted(ledger.seconds.items())},
            "calls": dict(ledger.calls),
            "plain_sys_ms_per_step": plain_info["sys_ms_per_step"],
            "plain_faults_per_step": plain_info["faults_per_step"], **info}


#: What a watched step does, as :func:`paired` classes it before the step (in this order).
STEP_CLASSES = ("quiet", "snapshot slice", "telemetry", "statistics", "full")


def _step_class(run: Run) -> str:
    """What ``run``'s coming step does: quiet (the hooks' shortest path), a slice of a spread
    snapshot, telemetry, activation statistics, or a full step with none of them (the
    schedule's boundary, a batch of held steps sent, hooks armed for the next telemetry)."""
    if run._steps < run._quiet_until and time.perf_counter() < run._quiet_deadline:
        return "quiet"
    if run._pacer.pending is not None:
        return "snapshot slice"
    if run._telemetry_due():
        return "telemetry"
    return "statistics" if run._stats_armed else "full"


def paired(work: Workload, steps: int, db: Path) -> dict:
    """A plain and a watched copy of ``work`` train on the same batches step by step in turn
    (which goes first alternates), each step's training-thread CPU time read: what the
    machine's other work does to a step falls on both alike. Per class of watched step: its
    share of the steps and the extra CPU of a watched step over the plain step beside it
    (median and mean, us), and that extra spread over all steps; beside them the sender
    thread's CPU per step and its wake-ups."""
    _train(work, 20, None)  # first allocations and kernels, outside the figures
    (_, plain), (run, watched) = _trainer(work, None), _trainer(work, db)
    classes, extra = [], []
    data = demo.batches(work.x, work.y, batch_size=work.batch_size, seed=0)
    for index, (xb, yb, _) in zip(range(steps), data):
        classes.append(_step_class(run))
        cpu = {}
        for name, step in ((("plain", plain), ("watched", watched)) if index % 2 == 0
                           else (("watched", watched), ("plain", plain))):
            start = time.thread_time()
            step(xb, yb)
            cpu[name] = time.thread_time() - start
        extra.append(cpu["watched"] - cpu["plain"])
    sender_cpu, wakeups = run.counters().sender_cpu_seconds, _sender_wakeups()
    run.detach()
    found = {}
    for name in STEP_CLASSES:
        spent = [e for c, e in zip(classes, extra) if c == name]
        if spent:
            found[name] = {"share": len(spent) / steps, "median_us": 1e6 * median(spent),
                           "mean_us": 1e6 * fmean(spent), "per_step_us": 1e6 * sum(spent) / steps}
    return {"model": work.name, "steps": steps, "classes": found,
            "sender_cpu_us_per_step": 1e6 * sender_cpu / steps, "sender_wakeups": wakeups}


def _print_paired(summary: dict) -> None:
    print(f"{summary['model']}: {summary['steps']} paired steps; sender thread "
          f"{summary['sender_cpu_us_per_step']:.0f} us of CPU a step, "
          f"{summary['sender_wakeups']} wake-ups", flush=True)
    for name, found in summary["classes"].items():
        print(f"  {name:<16} {found['share']:6.1%} of steps  extra CPU median "
              f"{found['median_us']:+8.1f} us  mean {found['mean_us']:+8.1f} us  "
              f"-> {found['per_step_us']:+7.1f} us a step", flush=True)


#: The training thread's system time and page faults per step, plain and watched.
USAGE_KEYS = ("plain_sys_ms_per_step", "plain_faults_per_step", "sys_ms_per_step",
              "faults_per_step")


def table_rows(summary: dict) -> list[dict]:
    """One row per activity of one model's :func:`breakdown`, then the sender thread and all of
    capture: CPU ms over the run, per step (us) and as a share of plain training's CPU time."""
    steps, plain = summary["steps"], summary["plain_cpu_ms_per_step"] * summary["steps"]
    whole = (summary["watched_cpu_ms_per_step"] - summary["plain_cpu_ms_per_step"]) * steps
    spent = [(activity, ms, summary["calls"][activity])
             for activity, ms in summary["activities_ms"].items()]
    spent += [("sender thread (calls: its wake-ups)", 1e3 * summary["sender_cpu_s"],
               summary["sender_wakeups"]),
              ("all of capture (training thread, watched - plain)", whole, None)]
    return [{"model": summary["model"], "activity": activity, "cpu_ms": ms,
             "us_per_step": 1e3 * ms / steps, "share": ms / plain, "calls": calls,
             "steps": steps, "plain_ms_per_step": summary["plain_cpu_ms_per_step"],
             "agent_overhead": summary["agent_overhead"], "probe_size": summary["probe_size"],
             **{key: summary[key] for key in USAGE_KEYS + ("plain_drift",)}}
            for activity, ms, calls in spent]


def _print(rows: list[dict]) -> None:
    first = rows[0]
    print(f"{first['model']}: {first['steps']} steps, plain training CPU "
          f"{first['plain_ms_per_step']:.3f} ms/step; agent {first['agent_overhead']:.2%}; "
          f"probe {first['probe_size']}; training thread's system time and page faults per "
          f"step: plain {first['plain_sys_ms_per_step']:.3f} ms, "
          f"{first['plain_faults_per_step']:.0f}; watched {first['sys_ms_per_step']:.3f} ms, "
          f"{first['faults_per_step']:.0f}; plain after / before {first['plain_drift']:+.1%}",
          flush=True)
    for row in rows:
        calls = "" if row["calls"] is None else f"{row['calls']:6d} calls"
        print(f"  {row['activity']:<52} {row['cpu_ms']:9.1f} ms  {row['share']:7.2%}  {calls}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--models", nargs="+", default=["cnn", "mlp"])
    parser.add_argument("--allocator", choices=("system", "fixed"), default="system",
                        help="fixed: keep freed memory in the process (see the docstring)")
    parser.add_argument("--paired", action="store_true",
                        help="train plain and watched step by step in turn; CPU per step class")
    add_json_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.allocator == "fixed":
        fix_allocator()
    recorder = Recorder("capture_breakdown", args)
    rows, summaries = [], []
    with local_server("breakdown") as db:
        for work in workloads(tuple(args.models)):
            if args.paired:
                summaries.append(paired(work, args.steps, db))
                rows += [{"model": work.name, "class": name, **found}
                         for name, found in summaries[-1]["classes"].items()]
                _print_paired(summaries[-1])
                continue
            summaries.append(breakdown(work, args.steps, db))
            rows += table_rows(summaries[-1])
            _print(rows[-len(summaries[-1]["activities_ms"]) - 2:])
    recorder.write(args.json, rows, threads=torch.get_num_threads(), models=summaries)


if __name__ == "__main__":
    main()
