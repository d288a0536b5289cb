"""Projector pool scaling: maps per second with several runs projecting at once, by pool size.

For each pool size (default 1 and 2 worker processes, measured one after the other in this
process), a fresh server-side projector (:class:`ProjectionWorker`, engine ``pool``, a real
DuckDB store in a temporary folder) warms its workers (off the clock), then receives
``--snapshots`` snapshots of one layer for each of ``--runs`` runs at once (a drifting mixture,
``--points`` x ``--dim``), and the clock runs until every map and its quality are stored. Each
update trains a fixed number of steps (no time budget), so the work per map does not depend on
the machine's load, only the time does. Prints one line per pool size and the speed-up.

    python benchmarks/projector_pool.py [--workers 1 2] [--runs 4] [--snapshots 4]
        [--points 1000] [--dim 64] [--device cpu] [--json OUT]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder, add_json_argument  # noqa: E402
from synthetic_features import drifting_mixture  # noqa: E402

from sentrycam.backend.feed import Change, ChangeFeed  # noqa: E402
from sentrycam.backend.projection import ProjectionWorker  # noqa: E402
from sentrycam.backend.store import Store  # noqa: E402
from sentrycam.protocol.changes import ChangeKind  # noqa: E402
from sentrycam.protocol.messages import ProbeSet, RunStart, Snapshot  # noqa: E402

log = logging.getLogger("projector_pool")
WARM_S = 900.0
LAYER = "fc"


def run_snapshots(args: argparse.Namespace, run_index: int) -> tuple[np.ndarray, list[Snapshot]]:
    """The labels int64 [points] and ``args.snapshots`` snapshots (features float16
    [points, dim]) of run number ``run_index``."""
    run_id = f"bench{run_index:05d}"
    snapshots, labels = [], None
    for step, (features, labels) in enumerate(drifting_mixture(
            args.points, args.dim, args.snapshots, args.seed + run_index)):
        snapshots.append(Snapshot(run_id, step * 10, 0, np.arange(args.points, dtype=np.int64),
                                  {"pred": labels}, {LAYER: features.astype(np.float16)},
                                  {LAYER: 0}))
    return labels, snapshots


def measure(args: argparse.Namespace, workers: int, folder: Path) -> dict[str, Any]:
    """One pool size: warm-up seconds, then maps, seconds and maps per second."""
    settings = {"first_steps": args.steps * 5, "steps": args.steps, "time_limit_s": None,
                "first_time_limit_s": None}
    runs = [run_snapshots(args, index) for index in range(args.runs)]
    with Store(folder / f"pool{workers}.duckdb") as store:
        seq = 0
        for labels, snapshots in runs:
            run_id = snapshots[0].run_id
            store.write([(seq, RunStart(run_id, "bench", time.time(), {})),
                         (seq + 1, ProbeSet(run_id, np.arange(args.points, dtype=np.int64),
                                            labels, np.zeros(args.points, np.uint8)))])
            seq += 2
        feed = ChangeFeed()
        worker = ProjectionWorker(store, feed, device=args.device, projector_settings=settings,
                                  max_layers=1, max_backlog=args.snapshots, engine="pool",
                                  workers=workers)
        started = time.perf_counter()
        worker.start()
        try:
            if not worker.wait_idle(WARM_S):
                raise RuntimeError(f"pool of {workers} not warm after {WARM_S} s")
            warm_s = time.perf_counter() - started
            started = time.perf_counter()
            for t in range(args.snapshots):  # every run streams at once
                feed.publish([Change(s[t].run_id, ChangeKind.SNAPSHOT, s[t].step, None, s[t])
                              for _, s in runs])
            if not worker.wait_idle(args.timeout):
                raise RuntimeError(f"pool of {workers}: not done in {args.timeout} s")
            seconds = time.perf_counter() - started
            state = worker.state()
        finally:
            worker.stop(10.0)
    maps = state["projected"]
    return {"workers": workers, "runs": args.runs, "maps": maps, "seconds": round(seconds, 2),
            "maps_per_s": round(maps / seconds, 3), "warm_up_s": round(warm_s, 1),
            "skipped": state["skipped"], "errors": state["errors"] + state["failed"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--snapshots", type=int, default=4, help="per run")
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="training steps per update")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="the projectors' device (cpu, cuda)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    add_json_argument(parser)
    args = parser.parse_args()
    recorder = Recorder("projector_pool", args)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sentrycam-pool-bench-") as folder:
        for workers in args.workers:
            row = measure(args, workers, Path(folder))
            rows.append(row)
            print(f"pool of {workers}: {row['maps']} maps of {args.runs} runs in "
                  f"{row['seconds']:.1f} s = {row['maps_per_s']:.2f} maps/s "
                  f"(warm-up {row['warm_up_s']:.0f} s)", flush=True)
    base = rows[0]["maps_per_s"]
    for row in rows:
        row["speedup"] = round(row["maps_per_s"] / base, 2)
    print("speed-up vs pool of %d: %s" % (rows[0]["workers"],
                                          ", ".join(f"{r['workers']}: {r['speedup']}x"
                                                    for r in rows)))
    recorder.write(args.json, rows)
    return 0 if all(row["errors"] == 0 and row["skipped"] == 0 for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
