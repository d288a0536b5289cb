"""Capture overhead: whole-round wall time with and without ``capture.attach`` at its defaults.

One model trains in rounds of a fixed number of steps, each round a fresh copy from the same
seed on the same batches; rounds go in cycles of three, plain (A), watched (W: ``attach`` at its
defaults streaming to a real local server), plain (B), and every other cycle runs B before A so
that slow drifts of a noisy machine hit both plain kinds alike. A watched round's wall time runs
from ``attach`` to the end of ``detach`` (the final flush), so everything capture costs the
training process lands in it: snapshot steps, the sender thread, hooks. Before every round the
benchmark waits until the local server's projector is idle, so that the server's work for the
last watched round does not land on the next plain one. Per model:

- **mean ratio**: total wall time of the W rounds over the mean of the A and B totals (what a
  user pays by the mean); the A/A row gives B over A: the noise floor;
- median, p95, **p99** and max step-time ratios over the pooled step times of the W rounds
  against those of the plain rounds (the stall a user feels);
- the agent's own measured overhead, dropped messages, and what the server stored (snapshots;
  share of steps with gradient telemetry: the fewest of any round).

Where the local server runs (``--placement``): ``split`` (the default) starts it pinned to the
last CPU and trains on the others, with as many torch threads, plain and watched rounds alike:
capture's own cost, the setup of the issue's held-out check (a team server, or a machine with a
core to spare, is this case); ``shared`` leaves the server and training on every CPU with
torch's default threads: what a machine whose training fills every core pays for a local server
beside it (see also ``local_server_cost.py``).

Every round, plain ones included, runs under the malloc thresholds that ``attach`` fixes for
the process (``capture/allocator.py``), so that no round gains or loses by glibc's adaptation.

A round lasts ``--round-seconds`` of plain training (the step count is fixed per model from an
untimed calibration round), so a 1 ms-step MLP and a 40 ms-step ResNet are both measured over
runs of the same length in time. Models: the demo CNN and a tiny MLP on digits, a ResNet-style
CNN on 3x32x32 inputs and a small transformer (``overhead_workloads.py``). The "defaults, 300
steps" rows are short runs of the CNN and the MLP, where the minimum cadence (capture/budget.py)
decides the schedule (issue 16: at least 6 maps and telemetry on half of the steps).
``--budget-alone`` adds to each cycle a watched round at the defaults but without that minimum
cadence (``attach(minimum_cadence=False)``): what the budget holds when it decides alone.

    python benchmarks/capture_overhead.py [--round-seconds 12] [--cycles 2] [--json OUT]
    python benchmarks/capture_overhead.py --placement shared --models cnn [--json OUT]
    python benchmarks/capture_overhead.py --quick [--json OUT]   # short: figures are rough
    python benchmarks/capture_overhead.py --quick --models mlp --cadence-steps 0  # a smoke run
    python benchmarks/capture_overhead.py --models cnn --budget-alone --cycles 8  # floor's share
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead_workloads import OverheadRow, Workload, local_server, workloads  # noqa: E402
from results import Recorder, add_json_argument, distribution  # noqa: E402

from sentrycam import capture  # noqa: E402
from sentrycam.capture import demo, launcher  # noqa: E402
from sentrycam.capture.allocator import keep_freed_memory  # noqa: E402

MODELS = ("cnn", "mlp", "resnet32", "transformer")
#: Longest wait for the local server's projector to go idle before a round (seconds).
SETTLE_LIMIT_S = 90.0


@dataclass
class Round:
    """One round: its wall time (s, attach to detach for a watched one), its step times (s),
    and for a watched round what the agent measured and the server stored."""

    wall: float
    steps: list[float]
    info: dict


def _step(model, optimizer, criterion, xb, yb) -> float:
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    criterion(model(xb), yb).backward()
    optimizer.step()
    return time.perf_counter() - started


def one_round(work: Workload, steps: int, db: Path | None, **attach_kwargs) -> Round:
    """Train a fresh copy of ``work`` for ``steps`` steps; with ``db`` capture is attached
    (streaming to the local server of ``db``) for the whole round."""
    model = work.build(0)
    optimizer, criterion = torch.optim.Adam(model.parameters(), lr=2e-3), nn.CrossEntropyLoss()
    batches = demo.batches(work.x, work.y, batch_size=work.batch_size, seed=0)
    started = time.perf_counter()
    run = None if db is None else capture.attach(
        model, probe=(work.x, work.y), criterion=criterion, db=db,
        run_name=f"overhead-{work.name}", **attach_kwargs)
    times = [_step(model, optimizer, criterion, xb, yb)
             for _, (xb, yb, _) in zip(range(steps), batches)]
    if run is None:
        return Round(time.perf_counter() - started, times, {})
    info = {"overhead": run.overhead, "budget": run.overhead_budget}
    run.detach()  # inside the round: it finishes a snapshot under way and flushes the sender
    wall = time.perf_counter() - started
    info.update(dropped=run.counters().dropped, **recorded(run, steps))
    return Round(wall, times, info)


def recorded(run: capture.Run, steps: int) -> dict[str, float]:
    """What the server stored of ``run``: its snapshots, and the share of its ``steps`` steps
    that have gradient telemetry."""
    def get(path: str) -> dict:
        with urllib.request.urlopen(f"{run.url}/api/runs/{run.run_id}{path}", timeout=30) as r:
            return json.loads(r.read())

    telemetry = set(get("/scalars?names=grad_norm")["step"])
    return {"snapshots": get("")["n_snapshots"], "telemetry_share": len(telemetry) / steps}


def settle(url: str) -> None:
    """Wait until the local server's projector has nothing queued or running (at most
    :data:`SETTLE_LIMIT_S`), so its work for one round is not timed in the next."""
    deadline = time.monotonic() + SETTLE_LIMIT_S
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/projector", timeout=30) as response:
            state = json.loads(response.read())
        if state["state"] in ("off", "ready") and not state.get("queue_depth"):
            return
        time.sleep(0.5)
    print(f"  (the projector was still busy after {SETTLE_LIMIT_S:g} s)", flush=True)


def calibrate(work: Workload, seconds: float, url: str) -> int:
    """Steps per round: ``seconds`` of plain training, from an untimed 60-step round."""
    settle(url)
    plain = one_round(work, 60, None)
    return max(60, round(seconds / statistics.median(plain.steps)))


def rounds(work: Workload, steps: int, cycles: int, db: Path, url: str,
           watched: dict[str, dict]) -> dict[str, list[Round]]:
    """``cycles`` cycles A, then one watched round per entry of ``watched`` (its key names the
    kind, its value gives the attach arguments), then B; every other cycle in reverse order.
    Each round ``steps`` steps."""
    order = ["A", *watched, "B"]
    done: dict[str, list[Round]] = {kind: [] for kind in order}
    for cycle in range(cycles):
        for kind in order if cycle % 2 == 0 else order[::-1]:
            settle(url)
            done[kind].append(one_round(work, steps, db if kind in watched else None,
                                        **watched.get(kind, {})))
    return done


def placement_cores(placement: str) -> tuple[set[int] | None, set[int] | None]:
    """``(server CPUs, training CPUs)`` for ``placement``: for "split" the last CPU this process
    may use and the others; (None, None) for "shared", or where the split cannot be made (one
    CPU, or no CPU affinity on this platform: said on stdout)."""
    if placement == "shared":
        return None, None
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
    if len(cpus) < 2:
        print("  (cannot keep the server apart from training here: the rounds share the CPUs)",
              flush=True)
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def ratio_row(model: str, setting: str, steps: int, watched: list[Round],
              plain: list[list[Round]]) -> OverheadRow:
    """``watched`` rounds against the mean of each list of ``plain`` rounds' totals."""
    plain_wall = statistics.mean(sum(r.wall for r in kind) for kind in plain)
    w = distribution(t for r in watched for t in r.steps)
    p = distribution(t for kind in plain for r in kind for t in r.steps)
    ratios = {f"{key}_ratio": w[key] / p[key] for key in ("p50", "p95", "p99", "max")}
    cycles = [w.wall / statistics.mean(kind[i].wall for kind in plain)
              for i, w in enumerate(watched)]
    se = statistics.stdev(cycles) / len(cycles) ** 0.5 if len(cycles) > 1 else None
    row = OverheadRow(model, setting, 1e3 * p["p50"], 1e3 * p["p95"],
                      mean_ratio=sum(r.wall for r in watched) / plain_wall, round_steps=steps,
                      mean_ratio_se=se, **ratios)
    infos = [r.info for r in watched if r.info]
    if not infos:
        return row
    return replace(row, overhead=statistics.mean(i["overhead"] for i in infos),
                   budget=infos[0]["budget"], dropped=sum(i["dropped"] for i in infos),
                   snapshots=min(i["snapshots"] for i in infos),
                   telemetry_share=min(i["telemetry_share"] for i in infos))


#: The watched setting of ``--budget-alone``: attach's defaults but the minimum cadence.
BUDGET_ALONE = ("defaults, no minimum cadence", {"minimum_cadence": False})


def measure(work: Workload, setting: str, steps: int, cycles: int, db: Path, url: str,
            aa: bool = True, budget_alone: bool = False, **attach_kwargs) -> list[OverheadRow]:
    """The A/A row (with ``aa``), the watched row of ``work`` and with ``budget_alone`` the
    :data:`BUDGET_ALONE` row, its rounds in the same cycles."""
    watched = {setting: attach_kwargs} | (dict([BUDGET_ALONE]) if budget_alone else {})
    done = rounds(work, steps, cycles, db, url, watched)
    rows = [ratio_row(work.name, "A/A (no capture)", steps, done["B"], [done["A"]])] if aa else []
    return rows + [ratio_row(work.name, kind, steps, done[kind], [done["A"], done["B"]])
                   for kind in watched]


def _report(row: OverheadRow, placement: str) -> dict:
    row = replace(row, placement=placement)
    print(row.line(), flush=True)
    return row.as_dict()


def all_rows(args: argparse.Namespace, db: Path) -> list[dict]:
    """Per model the A/A and defaults rows; the short cadence rows; the ``--budget`` pass."""
    url = launcher.ensure_local_server(db)
    rows = []
    for work in workloads(tuple(args.models)):
        steps = calibrate(work, args.round_seconds, url)
        rows += [_report(row, args.where) for row in measure(
            work, "defaults", steps, args.cycles, db, url, budget_alone=args.budget_alone)]
    for work in workloads(("cnn", "mlp") if args.cadence_steps else ()):
        # a short run: the minimum cadence at work
        rows += [_report(row, args.where) for row in measure(
            work, f"defaults, {args.cadence_steps} steps", args.cadence_steps, args.cycles, db,
            url, aa=False)]
    if args.frameworks:
        from framework_overhead import framework_rows  # needs the lightning, huggingface extras

        rows += framework_rows(300, 4, db)
    if args.budget is not None:
        for work in workloads(("cnn", "mlp")):
            steps = calibrate(work, args.round_seconds, url)
            rows += [_report(row, args.where) for row in measure(
                work, f"budget {args.budget:g}", steps, args.cycles, db, url, aa=False,
                overhead_budget=args.budget)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-seconds", type=float,
                        help="length of a round in seconds of plain training (12)")
    parser.add_argument("--cycles", type=int, help="cycles of rounds A, W, B per model (2)")
    parser.add_argument("--cadence-steps", type=int, default=300,
                        help="steps of the short cadence runs of the CNN and MLP (0: none)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--frameworks", action="store_true",
                        help="add the Lightning and Hugging Face callback rows (slow)")
    parser.add_argument("--budget", type=float,
                        help="a non-default budget to check on the CNN and the MLP")
    parser.add_argument("--budget-alone", action="store_true",
                        help="add watched rounds without the minimum cadence "
                             "(attach(minimum_cadence=False)) to each model's cycles")
    parser.add_argument("--placement", choices=("split", "shared"), default="split",
                        help="the server on its own CPU, training on the rest (split), or both "
                             "on every CPU (shared)")
    parser.add_argument("--quick", action="store_true",
                        help="rounds of 3 s, 1 cycle (unless given): rough figures, fast")
    add_json_argument(parser)
    args = parser.parse_args()
    for name, full, quick in (("round_seconds", 12.0, 3.0), ("cycles", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    recorder = Recorder("capture_overhead", args)
    # attach fixes glibc's malloc thresholds for the rest of the process (capture/allocator.py);
    # fixed from the start, every plain round runs under them too, the first one included
    freed_memory = keep_freed_memory()
    server_cores, training_cores = placement_cores(args.placement)
    with local_server("overhead", server_cores) as db:
        if training_cores is not None:
            os.sched_setaffinity(0, training_cores)
            torch.set_num_threads(len(training_cores))
        args.where = "own core" if server_cores is not None else "shared"
        where = ("the server on its own CPU" if server_cores is not None
                 else "the server on the same CPUs")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}, "
              f"{args.cycles} cycles of rounds plain/watched/plain, {args.round_seconds:g} s "
              "per round", flush=True)
        rows = [dict(row, placement=args.where) for row in all_rows(args, db)]
    recorder.write(args.json, rows, threads=torch.get_num_threads(),
                   server_cpus=sorted(server_cores) if server_cores else None,
                   freed_memory=freed_memory)


if __name__ == "__main__":
    main()
