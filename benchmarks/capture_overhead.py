"""Capture overhead: step time with and without ``capture.attach`` at its defaults, by the mean.

Two copies of the same model train side by side in one process, one with capture attached
(default settings, streaming to a real local server) and one without. Their steps alternate in
ABBA order, so slow drifts of a noisy machine hit both alike. Two identical copies are not equally
fast (memory layout), so each round swaps which copy is watched, and an A/A round with no capture
on either copy shows the noise floor. Per model, over the step times of all rounds pooled: the
**mean ratio** (the watched copy's total time over the plain copy's: what capture costs, snapshot
steps and all), the median ratio, and the tail ratios (p95, p99: the stall a user feels; max),
beside the capture agent's own measured overhead. Models: the demo CNN and a tiny MLP on digits,
a ResNet-style CNN on 3x32x32 inputs and a small transformer (``overhead_workloads.py``).

Every watched run also reports what it recorded, read back from the server: snapshots, and the
share of its steps with gradient telemetry. The "defaults, 300 steps" rows are a short run of the
demo CNN and the MLP, where the minimum cadence (capture/budget.py) decides the schedule; a
last pass checks a non-default budget (``--budget``) on the CNN and the MLP.

    python benchmarks/capture_overhead.py [--steps 600] [--rounds 4] [--json OUT]
    python benchmarks/capture_overhead.py --quick [--json OUT]   # short: figures are rough
    python benchmarks/capture_overhead.py --quick --steps 30 --cadence-steps 0  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead_workloads import OverheadRow, Workload, local_server, workloads  # noqa: E402
from results import Recorder, add_json_argument, distribution  # noqa: E402

from sentrycam import capture  # noqa: E402
from sentrycam.capture import demo  # noqa: E402

MODELS = ("cnn", "mlp", "resnet32", "transformer")


def _step(model, optimizer, criterion, xb, yb) -> float:
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    criterion(model(xb), yb).backward()
    optimizer.step()
    return time.perf_counter() - started


def one_round(work: Workload, steps: int, warmup: int, db: Path | None, watched: int,
              **attach_kwargs) -> tuple[list[float], list[float], dict]:
    """Train two copies of ``work`` side by side; copy ``watched`` (0/1, or -1 for none) has
    capture attached. Returns the step times (s) of the watched copy (copy 0 for A/A), of the
    other, and what the watched run measured and recorded."""
    copies = []
    for _ in range(2):
        model = work.build(0)
        copies.append((model, torch.optim.Adam(model.parameters(), lr=2e-3), nn.CrossEntropyLoss()))
    run = None
    if watched >= 0:
        model, _, criterion = copies[watched]
        run = capture.attach(model, probe=(work.x, work.y), criterion=criterion, db=db,
                             run_name=f"overhead-{work.name}", **attach_kwargs)
    first = watched if watched >= 0 else 0
    order = (first, 1 - first)
    times: list[list[float]] = [[], []]
    batches = demo.batches(work.x, work.y, batch_size=work.batch_size, seed=0)
    for i, (xb, yb, _) in zip(range(steps + warmup), batches):
        for slot in (order if i % 2 == 0 else order[::-1]):
            elapsed = _step(*copies[slot], xb, yb)
            if i >= warmup:
                times[slot].append(elapsed)
    info: dict = {}
    if run is not None:
        info = {"overhead": run.overhead, "budget": run.overhead_budget,
                "dropped": run.counters().dropped}
        run.detach()  # after the timed steps: it finishes a snapshot still under way
        info.update(recorded(run, steps + warmup))
    return times[order[0]], times[order[1]], info


def recorded(run: capture.Run, steps: int) -> dict[str, float]:
    """What the server stored of ``run``: its snapshots, and the share of its ``steps`` steps
    that have gradient telemetry."""
    def get(path: str) -> dict:
        with urllib.request.urlopen(f"{run.url}/api/runs/{run.run_id}{path}", timeout=30) as r:
            return json.loads(r.read())

    telemetry = set(get("/scalars?names=grad_norm")["step"])
    return {"snapshots": get("")["n_snapshots"], "telemetry_share": len(telemetry) / steps}


def measure(work: Workload, setting: str, steps: int, warmup: int, rounds: int,
            db: Path | None, aa: bool = False, **attach_kwargs) -> OverheadRow:
    """``rounds`` rounds (alternating the watched copy), step times pooled over them. Agent
    figures are means over rounds; stored counts the fewest of any round (what every run got)."""
    watched, plain, infos = [], [], []
    for r in range(rounds):
        w, p, info = one_round(work, steps, warmup, db, -1 if aa else r % 2, **attach_kwargs)
        watched += w
        plain += p
        infos.append(info)
    w, p = distribution(watched), distribution(plain)
    ratios = {f"{key}_ratio": w[key] / p[key] for key in ("p50", "p95", "p99", "max")}
    row = OverheadRow(work.name, setting, 1e3 * p["p50"], 1e3 * p["p95"],
                      mean_ratio=sum(watched) / sum(plain), **ratios)
    if aa:
        return row
    return OverheadRow(**{**row.as_dict(),
                          "overhead": statistics.mean(i["overhead"] for i in infos),
                          "budget": infos[0]["budget"],
                          "dropped": sum(i["dropped"] for i in infos),
                          "snapshots": min(i["snapshots"] for i in infos),
                          "telemetry_share": min(i["telemetry_share"] for i in infos)})


def _report(row: OverheadRow) -> dict:
    print(row.line(), flush=True)
    return row.as_dict()


def all_rows(args: argparse.Namespace, db: Path) -> list[dict]:
    """Per model A/A and defaults; the 300-step cadence rows; the ``--budget`` pass."""
    rows = []
    for work in workloads(tuple(args.models)):
        rows.append(_report(measure(work, "A/A (no capture)", args.steps, args.warmup,
                                    args.rounds, None, aa=True)))
        rows.append(_report(measure(work, "defaults", args.steps, args.warmup, args.rounds, db)))
    for work in workloads(("cnn", "mlp") if args.cadence_steps else ()):
        # a short run: the minimum cadence at work
        rows.append(_report(measure(work, f"defaults, {args.cadence_steps} steps",
                                    args.cadence_steps, 0, 2, db)))
    if args.frameworks:
        from framework_overhead import framework_rows  # needs the lightning, huggingface extras

        rows += framework_rows(args.steps, args.rounds, db)
    if args.budget is not None:
        for work in workloads(("cnn", "mlp")):
            rows.append(_report(measure(work, f"budget {args.budget:g}", args.steps,
                                        args.warmup, 2, db, overhead_budget=args.budget)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="timed steps per copy and round (600)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (50)")
    parser.add_argument("--rounds", type=int, help="rounds per measurement, even (4)")
    parser.add_argument("--cadence-steps", type=int, default=300,
                        help="steps of the short cadence runs of the CNN and MLP (0: none)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--no-frameworks", dest="frameworks", action="store_false",
                        help="without the Lightning and Hugging Face callback rows")
    parser.add_argument("--budget", type=float, default=0.05,
                        help="a non-default budget to check in the last pass")
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds x 150 steps (unless given), no --budget pass: rough "
                             "figures, fast")
    add_json_argument(parser)
    args = parser.parse_args()
    for name, full, quick in (("steps", 600, 150), ("warmup", 50, 20), ("rounds", 4, 2)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.quick:
        args.budget = None
    recorder = Recorder("capture_overhead", args)
    with local_server("overhead") as db:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{args.rounds} rounds x {args.steps} timed steps, ABBA interleaving, "
              f"watched copy swapped each round", flush=True)
        rows = all_rows(args, db)
    recorder.write(args.json, rows, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
