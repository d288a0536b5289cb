"""Capture overhead: median step time with and without ``capture.attach`` at its defaults.

Two copies of the same model train side by side in one process, one with capture attached (default
settings, streaming to a real local server) and one without; their steps alternate (ABBA order, so
slow drifts of a noisy machine hit both alike), and the ratio of the median step times is printed,
for the demo CNN and a tiny MLP. A second pass checks that a configured budget holds: the capture
agent's own measured overhead and the mean step-time ratio against the budget.

    python benchmarks/capture_overhead.py [--steps 1500] [--budget 0.05]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from sentrycam import capture
from sentrycam.capture import demo, launcher


def _step(model, optimizer, criterion, xb, yb) -> float:
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    criterion(model(xb), yb).backward()
    optimizer.step()
    return time.perf_counter() - started


def measure(kind: str, steps: int, warmup: int, db: Path, **attach_kwargs) -> dict[str, float]:
    """Train two copies of ``kind`` for ``steps`` steps each, capture on one; return timings."""
    data = demo.load_digits_data(seed=0)
    pair = []
    for _ in range(2):
        model = demo.build_model(kind, seed=0)
        pair.append((model, torch.optim.Adam(model.parameters(), lr=2e-3), nn.CrossEntropyLoss()))
    watched, plain = pair
    run = capture.attach(watched[0], probe=(data.x_train, data.y_train), criterion=watched[2],
                         db=db, run_name=f"overhead-{kind}", **attach_kwargs)
    times = {"with": [], "without": []}
    batches = demo.batches(data.x_train, data.y_train, batch_size=64, seed=0)
    for i, (xb, yb, _) in zip(range(steps + warmup), batches):
        order = ((watched, "with"), (plain, "without"))
        for (model, opt, crit), label in (order if i % 2 == 0 else order[::-1]):
            elapsed = _step(model, opt, crit, xb, yb)
            if i >= warmup:
                times[label].append(elapsed)
    overhead = run.overhead
    counters = run.counters()
    run.detach()
    med_with, med_without = statistics.median(times["with"]), statistics.median(times["without"])
    return {
        "median_ms_with": 1e3 * med_with, "median_ms_without": 1e3 * med_without,
        "median_ratio": med_with / med_without,
        "mean_ratio": statistics.fmean(times["with"]) / statistics.fmean(times["without"]),
        "measured_overhead": overhead, "dropped": counters.dropped,
    }


def _report(label: str, result: dict[str, float]) -> None:
    print(f"{label:<28} median {result['median_ms_with']:7.3f} ms with / "
          f"{result['median_ms_without']:7.3f} ms without  ratio {result['median_ratio']:.4f}  "
          f"mean ratio {result['mean_ratio']:.4f}  agent-measured overhead "
          f"{result['measured_overhead']:.4f}  dropped {result['dropped']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="timed steps per model copy")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--budget", type=float, default=0.05,
                        help="a non-default budget to check in the second pass")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "overhead.duckdb"
        launcher.ensure_local_server(db)
        try:
            print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
                  f"{args.steps} timed steps per copy, steps interleaved ABBA", flush=True)
            for kind in ("cnn", "mlp"):
                _report(f"{kind} at defaults", measure(kind, args.steps, args.warmup, db))
            for kind in ("cnn", "mlp"):
                result = measure(kind, args.steps, args.warmup, db, overhead_budget=args.budget)
                _report(f"{kind} budget {args.budget:g}", result)
        finally:
            launcher.stop_local_server(db)


if __name__ == "__main__":
    main()
