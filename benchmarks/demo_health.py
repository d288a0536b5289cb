"""Incidents on the healthy demo: the demo CNN trained as ``sentrycam demo`` trains it.

    python benchmarks/demo_health.py [--steps 300 2000] [--seeds 0 1 2] [--no-projector]
        --json OUT
    python benchmarks/demo_health.py --stored COPY.duckdb [COPY2.duckdb ...] --json OUT

A healthy run should raise at most one incident (issue 15's acceptance), and its diagnosis
should fit its curves. Every run trains ``capture.demo.train`` with the demo's own attach
arguments (``cli_demo``: its probe size, attach's default overhead-budget schedule) into one
in-process server (``serve_in_thread``: real uvicorn, a real DuckDB file, the real audit
engine, the projector unless ``--no-projector``). One row per (steps, seed): the incidents
(steps, diagnosis, detectors), the alerts of severity >= 2 and the final validation figures.
``--stored`` reads the rows from demo runs kept earlier (``--db``) and audited again with the
checked-out detectors (``scenario_replay.py``), without training.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder  # noqa: E402
from scenarios import add_server_arguments, log_progress_only, settle  # noqa: E402

from sentrycam import capture  # noqa: E402
from sentrycam.backend.audit.incidents import incidents_of  # noqa: E402
from sentrycam.backend.cli_demo import DEMO_PROBE_SIZE  # noqa: E402
from sentrycam.backend.settings import ServerSettings  # noqa: E402
from sentrycam.backend.store import Store  # noqa: E402
from sentrycam.backend.testing import RunningServer, serve_in_thread  # noqa: E402
from sentrycam.capture import demo  # noqa: E402

DEMO_LR = inspect.signature(demo.train).parameters["lr"].default

log = logging.getLogger("sentrycam.demo_health")

#: The name of a demo run this benchmark trains (``demo-s{seed}-{steps}``, see :func:`run_one`).
RUN_NAME = re.compile(r"demo-s(\d+)-(\d+)")


def run_one(server: RunningServer, steps: int, seed: int, lr: float) -> dict[str, Any]:
    """Train the demo for ``steps`` with ``seed`` at Adam's ``lr``; the row of its incidents
    and alerts."""
    started = time.monotonic()
    runs: list[Any] = []

    def attach(model, **parts):
        runs.append(capture.attach(model, url=server.url, run_name=f"demo-s{seed}-{steps}",
                                   probe_size=DEMO_PROBE_SIZE, seed=seed, **parts))
        return runs[-1]

    final = demo.train(steps, attach=attach, seed=seed, lr=lr)
    settle(server)
    return health_row(server.store, runs[0].run_id, steps, seed, final,
                      time.monotonic() - started)


def health_row(store: Any, run_id: str, steps: int, seed: int, final: dict[str, float],
               seconds: float) -> dict[str, Any]:
    """One demo run's row from its stored alerts and final validation figures."""
    alerts = store.alerts(run_id)
    incidents = incidents_of(run_id, alerts)
    confirmed = [a for a in alerts if a["severity"] >= 2]
    return {"steps": steps, "seed": seed, "run_id": run_id, "incidents": len(incidents),
            "incident_list": [{k: i[k] for k in ("start_step", "end_step", "confirmed_step",
                                                 "severity", "diagnosis", "confidence",
                                                 "detectors")} for i in incidents],
            "confirmed_alerts": len(confirmed),
            "confirmed_detectors": sorted({a["detector"] for a in confirmed}),
            "alerts_total": len(alerts),
            "val_loss": round(final["val_loss"], 4), "val_acc": round(final["val_acc"], 4),
            "seconds": round(seconds, 1)}


def stored_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of the demo runs (named ``demo-s{seed}-{steps}``) kept in one DuckDB file."""
    rows = []
    with Store(path, read_only=True) as store:
        for run in store.run_summaries():
            found = RUN_NAME.fullmatch(run.get("name") or "")
            if found is None or run["last_step"] is None:
                continue
            columns = store.scalars(run["run_id"], ["val_loss", "val_acc"])
            last = {name: value for _, name, value in sorted(
                zip(columns["step"], columns["name"], columns["value"]))}
            rows.append(health_row(store, run["run_id"], int(found[2]), int(found[1]), last,
                                   0.0))
    return sorted(rows, key=lambda row: (row["steps"], row["seed"]))


def trained_rows(args: argparse.Namespace, recorder: Recorder) -> list[dict[str, Any]]:
    """Train the demo for every (steps, seed) of ``args`` into one server; the rows."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = ServerSettings(db_path=args.db or Path(tmp) / "demo.duckdb", port=0,
                                  projector=args.projector)
        with serve_in_thread(settings) as server:
            for steps in args.steps:
                for seed in args.seeds:
                    row = run_one(server, steps, seed, args.lr)
                    rows.append(row)
                    # Written after every run: a long benchmark stopped early keeps its rows.
                    recorder.write(args.json, rows, projector=args.projector)
                    log.info("demo %d steps seed %d: %d incident(s) %s; sev>=2 alerts %s (%.0fs)",
                             steps, seed, row["incidents"],
                             [(i["confirmed_step"], i["diagnosis"]) for i in
                              row["incident_list"]], row["confirmed_detectors"], row["seconds"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 2000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, default=DEMO_LR,
                        help="Adam's learning rate (the demo's own by default; the tuning "
                             "split's demo-like runs use higher ones, see scenario_plan.py)")
    parser.add_argument("--stored", type=Path, nargs="+", default=None,
                        help="rows from demo runs kept in these files (audited again with "
                             "scenario_replay.py) instead of training")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    log_progress_only()
    recorder = Recorder("demo_health", {**vars(args), "stored": [str(path) for path in
                                                                 args.stored or ()]})
    torch.set_num_threads(1)
    if args.stored:
        rows = [row for path in args.stored for row in stored_rows(path)]
        recorder.write(args.json, rows, projector=args.projector)
    else:
        rows = trained_rows(args, recorder)
    for row in rows:
        print(f"{row['steps']:>5} steps seed {row['seed']}: {row['incidents']} incident(s) "
              + "; ".join(f"{i['start_step']}-{i['end_step']} {i['diagnosis']} "
                          f"({', '.join(i['detectors'])})" for i in row["incident_list"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
