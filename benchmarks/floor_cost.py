"""What the minimum cadence costs at the least: the bare torch work of its firings, against the budget.

The minimum cadence (``capture.budget.CADENCE_FLOOR``, issue 16: at least 6 maps and telemetry
on half the steps of a 300-step run) fires whatever the overhead budget says. This benchmark
asks whether any implementation could pay for it within attach's default budget: per model
(``overhead_workloads.py``, one torch thread, as the capture benchmarks train), it measures
the CPU time (``time.thread_time``) of

- a plain training step (the mean of ``--steps`` steps after a warm-up);
- the least a map can cost (the fastest of 30 calls): one forward pass, in eval mode without autograd, of
  ``MIN_MAP_SAMPLES`` probe samples (the fewest a map at the floor covers), nothing else: no
  hooks, no copy of the features, no message;
- the least a telemetry firing can cost (the fastest of 300 calls): one norm per parameter's gradient in a single fused
  call (``torch._foreach_norm``) read back to Python, nothing else;

and counts the floor's firings in a run of each length of ``--run-steps`` from the floor's own
rule (``budget.floor_gap``/``budget.next_due`` at attach's default intervals: the same code the
schedule runs, so the count cannot drift from it). Bare floor cost = maps x map + telemetry firings x telemetry, as a share
of the run's plain training time, beside ``--budget`` (attach's default). A share above the
budget means the floor cannot fit in it, whatever capture does around these torch calls.

    python benchmarks/floor_cost.py [--models mlp cnn] [--run-steps 300 1197 6000] \
        [--json OUT]
"""

from __future__ import annotations

import argparse
import inspect
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead_workloads import Workload, workloads  # noqa: E402
from results import Recorder, add_json_argument  # noqa: E402

from sentrycam import capture  # noqa: E402
from sentrycam.capture.attaching import DEFAULT_EVERY  # noqa: E402
from sentrycam.capture.budget import MIN_MAP_SAMPLES, floor_gap, next_due  # noqa: E402

DEFAULT_BUDGET = inspect.signature(capture.attach).parameters["overhead_budget"].default


#: Each activity's shortest interval at attach's defaults (``Run``'s ``minimum``: snapshots
#: every ``DEFAULT_EVERY`` steps, telemetry every step).
EVERY = {"snapshot": DEFAULT_EVERY, "telemetry": 1}


def floor_firings(activity: str, run_steps: int) -> int:
    """Firings of ``activity`` in a run of ``run_steps`` steps when the budget would hold it
    off for ever and only the floor makes it fire (first firing at step 0, then each as late
    as ``Schedule`` allows: ``next_due`` with an unbounded gap and the floor's)."""
    step, count = 0, 0
    while step < run_steps:
        count += 1
        step = next_due(step, EVERY[activity], math.inf, floor_gap(activity, step))
    return count


def cpu_seconds(action: Callable[[], object], repeats: int) -> list[float]:
    """CPU seconds of the calling thread for each of ``repeats`` calls of ``action``."""
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        action()
        times.append(time.thread_time() - start)
    return times


def bare_costs(work: Workload, steps: int) -> dict[str, float]:
    """Plain step, bare map and bare telemetry CPU seconds of one workload (seeded)."""
    model = work.build(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    criterion = nn.CrossEntropyLoss()
    x, y = work.x[:work.batch_size], work.y[:work.batch_size]
    probe = work.x[:MIN_MAP_SAMPLES]

    def step() -> None:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()

    def one_map() -> None:
        model.eval()
        with torch.no_grad():
            model(probe)
        model.train()

    for _ in range(max(steps // 10, 5)):  # warm-up: allocations, first-call paths, gradients
        step()
    grads = [p.grad for p in model.parameters() if p.grad is not None]

    def telemetry() -> None:
        torch.stack(torch._foreach_norm(grads)).tolist()

    # Conservative both ways: a firing at the fastest it was seen, a step at its mean (the
    # mean is at least the median, so the floor's share is never overstated).
    return {"step_s": statistics.mean(cpu_seconds(step, steps)),
            "map_s": min(cpu_seconds(one_map, 30)),
            "telemetry_s": min(cpu_seconds(telemetry, 300))}


def rows_for(work: Workload, costs: dict[str, float], run_steps: list[int],
             budget: float) -> list[dict]:
    rows = []
    for length in run_steps:
        maps, telemetry = floor_firings("snapshot", length), floor_firings("telemetry", length)
        floor_s = maps * costs["map_s"] + telemetry * costs["telemetry_s"]
        training_s = length * costs["step_s"]
        rows.append({"model": work.name, "run_steps": length, "step_ms": costs["step_s"] * 1e3,
                     "map_ms": costs["map_s"] * 1e3,
                     "telemetry_us": costs["telemetry_s"] * 1e6, "maps": maps,
                     "telemetry_firings": telemetry, "floor_ms": floor_s * 1e3,
                     "training_ms": training_s * 1e3, "floor_share": floor_s / training_s,
                     "budget": budget, "fits": floor_s / training_s <= budget})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"],
                        choices=["mlp", "cnn", "resnet32", "transformer"])
    parser.add_argument("--run-steps", nargs="+", type=int, default=[300, 1197, 6000])
    parser.add_argument("--steps", type=int, default=200, help="plain steps timed per model")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    recorder = Recorder("floor_cost", args)
    rows: list[dict] = []
    for work in workloads(tuple(args.models)):
        costs = bare_costs(work, args.steps)
        for row in rows_for(work, costs, args.run_steps, args.budget):
            rows.append(row)
            print(f"{row['model']:12s} {row['run_steps']:6d} steps: {row['maps']:3d} maps x "
                  f"{row['map_ms']:.3f} ms + {row['telemetry_firings']:4d} telemetry x "
                  f"{row['telemetry_us']:.0f} us = {row['floor_ms']:.1f} ms of "
                  f"{row['training_ms']:.0f} ms training: {row['floor_share']:.2%} "
                  f"(budget {row['budget']:.0%})", flush=True)
    recorder.write(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
