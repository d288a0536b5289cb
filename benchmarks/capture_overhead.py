"""Capture overhead: median step time with and without ``capture.attach`` at its defaults.

Two copies of the same model train side by side in one process, one with capture attached
(default settings, streaming to a real local server) and one without. Their steps alternate in
ABBA order, so slow drifts of a noisy machine hit both alike. Two identical copies are not equally
fast (memory layout), so each round swaps which copy is watched, and an A/A round with no capture
on either copy shows the noise floor. Printed per model: the median over rounds of the ratio of
median step times, the mean-time ratio (snapshots included) and the tail ratios (p95, p99, max
step time of the watched copy over the plain one). A second pass checks that a configured budget
holds: the capture agent's own measured overhead against the budget. Every watched run also
reports what it recorded, read back from the server: snapshots, and the share of its steps with
gradient telemetry. ``--quick`` measures only "defaults, 300 steps": a short run on each small
model, where the minimum cadence (see capture/budget.py) decides the schedule.

    python benchmarks/capture_overhead.py [--steps 600] [--rounds 4] [--budget 0.05] [--json OUT]
    python benchmarks/capture_overhead.py --quick [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder, add_json_argument, distribution  # noqa: E402

from sentrycam import capture  # noqa: E402
from sentrycam.capture import demo, launcher  # noqa: E402


def _step(model, optimizer, criterion, xb, yb) -> float:
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    criterion(model(xb), yb).backward()
    optimizer.step()
    return time.perf_counter() - started


def one_round(kind: str, steps: int, warmup: int, db: Path | None, watched: int,
              **attach_kwargs) -> dict[str, float]:
    """Train two copies of ``kind`` side by side; copy ``watched`` (0/1, or -1 for none) has
    capture attached. Returns step-time ratios watched/plain (copy 0/copy 1 for A/A) of the
    median, mean, p95, p99 and max, and the plain copy's median and p95 step time (ms)."""
    data = demo.load_digits_data(seed=0)
    copies = []
    for _ in range(2):
        model = demo.build_model(kind, seed=0)
        copies.append((model, torch.optim.Adam(model.parameters(), lr=2e-3), nn.CrossEntropyLoss()))
    run = None
    if watched >= 0:
        model, _, criterion = copies[watched]
        run = capture.attach(model, probe=(data.x_train, data.y_train), criterion=criterion,
                             db=db, run_name=f"overhead-{kind}", **attach_kwargs)
    first = watched if watched >= 0 else 0
    order = (first, 1 - first)
    times: list[list[float]] = [[], []]
    batches = demo.batches(data.x_train, data.y_train, batch_size=64, seed=0)
    for i, (xb, yb, _) in zip(range(steps + warmup), batches):
        for slot in (order if i % 2 == 0 else order[::-1]):
            elapsed = _step(*copies[slot], xb, yb)
            if i >= warmup:
                times[slot].append(elapsed)
    watched_s, plain_s = distribution(times[order[0]]), distribution(times[order[1]])
    result = {f"{key}_ratio": watched_s[key] / plain_s[key]
              for key in ("p50", "mean", "p95", "p99", "max")}
    result.update(median_ms=1e3 * plain_s["p50"], p95_ms=1e3 * plain_s["p95"],
                  overhead=0.0, dropped=0)
    if run is not None:
        result["overhead"], result["dropped"] = run.overhead, run.counters().dropped
        run.detach()
        result.update(recorded(run, steps + warmup))
    return result


def recorded(run: capture.Run, steps: int) -> dict[str, float]:
    """What the server stored of ``run``: its snapshots, and the share of its ``steps`` steps
    that have gradient telemetry."""
    def get(path: str) -> dict:
        with urllib.request.urlopen(f"{run.url}/api/runs/{run.run_id}{path}", timeout=30) as r:
            return json.loads(r.read())

    telemetry = set(get("/scalars?names=grad_norm")["step"])
    return {"snapshots": get("")["n_snapshots"], "telemetry_share": len(telemetry) / steps}


def measure(kind: str, steps: int, warmup: int, rounds: int, db: Path | None,
            aa: bool = False, **attach_kwargs) -> dict[str, float]:
    """Median over ``rounds`` rounds (alternating the watched copy) of each round's figures."""
    results = [one_round(kind, steps, warmup, db, -1 if aa else r % 2, **attach_kwargs)
               for r in range(rounds)]
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def _report(model: str, setting: str, result: dict[str, float]) -> dict[str, float | str]:
    """Print one line; returns it as a row of the result file."""
    print(f"{model + ' ' + setting:<26} plain step {result['median_ms']:6.3f} ms  median ratio "
          f"{result['p50_ratio']:.4f}  mean ratio {result['mean_ratio']:.4f}  p95/p99/max "
          f"ratio {result['p95_ratio']:.3f}/{result['p99_ratio']:.3f}/{result['max_ratio']:.3f}"
          f"  agent-measured overhead {result['overhead']:.4f}  dropped {result['dropped']:.0f}"
          + (f"  snapshots {result['snapshots']:.0f}  telemetry on "
             f"{result['telemetry_share']:.0%} of steps" if "snapshots" in result else ""),
          flush=True)
    return {"model": model, "setting": setting, **result}


def full_rows(args: argparse.Namespace, db: Path) -> list[dict[str, float | str]]:
    """A/A, defaults and ``--budget`` rows on each model, ``--steps`` timed steps a round."""
    rows = []
    for kind in ("cnn", "mlp"):
        rows.append(_report(kind, "A/A (no capture)", measure(
            kind, args.steps, args.warmup, args.rounds, None, aa=True)))
        rows.append(_report(kind, "defaults", measure(kind, args.steps, args.warmup,
                                                      args.rounds, db)))
    for kind in ("cnn", "mlp"):
        result = measure(kind, 3 * args.steps, args.warmup, 2, db, overhead_budget=args.budget)
        rows.append(_report(kind, f"budget {args.budget:g}", result))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="timed steps per copy and round")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=4, help="rounds per measurement (even)")
    parser.add_argument("--budget", type=float, default=0.05,
                        help="a non-default budget to check in the second pass")
    parser.add_argument("--quick", action="store_true",
                        help='only "defaults, 300 steps" on each model, 2 rounds')
    add_json_argument(parser)
    args = parser.parse_args()
    recorder, rows = Recorder("capture_overhead", args), []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "overhead.duckdb"
        launcher.ensure_local_server(db)
        try:
            rounds = "" if args.quick else f", {args.rounds} rounds x {args.steps} timed steps"
            print(f"torch {torch.__version__}, {torch.get_num_threads()} threads{rounds}, "
                  f"ABBA interleaving, watched copy swapped each round", flush=True)
            for kind in ("cnn", "mlp"):  # a short run: the minimum cadence at work
                rows.append(_report(kind, "defaults, 300 steps", measure(
                    kind, 300, 0, 2 if args.quick else args.rounds, db)))
            if not args.quick:
                rows += full_rows(args, db)
        finally:
            launcher.stop_local_server(db)
    recorder.write(args.json, rows, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
