"""Audit scenario benchmark: injected failures and healthy runs through capture -> server -> engine.

    python benchmarks/scenarios.py [--split tuning|test | --quick] --json OUT

The plan (scenario_plan.py) has a tuning split (the runs the detector constants were set on) and
a disjoint test split (only scored); ``--quick`` is a few short runs for CI.
One in-process sentrycam server (``sentrycam.backend.testing.serve_in_thread``: real uvicorn
on loopback, real DuckDB file, the real audit engine) serves the whole benchmark; every run
streams into it with ``capture.attach(url=...)``.
For each run it reports the scenario (kind, architecture, seed, schedule, optimizer), the
injected step, whether a severity >= 2 alert was confirmed at or after the injection, the first
such alert (step, detector, severity), the diagnosis of the first incident at or after the
injection and whether it matches the kind's family (``unknown`` is an abstain, counted apart),
the lead over the validation-loss trigger (the same causal rule applied to the per-epoch
validation loss) in steps and epochs, and false alarms (severity >= 2 alerts confirmed before
the injection, or anywhere in a healthy run). Then a summary per kind (scenario_score.py).
See docs/scenarios.md for the scenarios and the trigger rules.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder, add_json_argument  # noqa: E402
from scenario_failures import Injection  # noqa: E402
from scenario_models import build  # noqa: E402
from scenario_plan import (FAMILY, HEALTHY, SCHEDULES, SPLITS, Scenario,  # noqa: E402
                           check_disjoint)
from scenario_score import render, score_run, summarise  # noqa: E402

from sentrycam import capture  # noqa: E402
from sentrycam.backend.audit.incidents import incidents_of  # noqa: E402
from sentrycam.backend.settings import ServerSettings  # noqa: E402
from sentrycam.backend.testing import RunningServer, serve_in_thread  # noqa: E402

log = logging.getLogger("sentrycam.scenarios")

#: Adam's learning rate per architecture; SGD (momentum 0.9) takes SGD_FACTOR times it.
LEARNING_RATES = {"mlp": 2e-3, "cnn": 6e-3, "gru": 3e-3, "transformer": 1e-3}
SGD_FACTOR = 10.0
BATCH = 32
SNAPSHOT_EVERY = 25


def make_optimizer(name: str, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr * SGD_FACTOR, momentum=0.9)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    return torch.optim.Adam(model.parameters(), lr=lr)


def settle(server: RunningServer) -> None:
    """Wait until everything received is stored and audited."""
    state = server.app.state
    for _ in range(3):  # an alert write can follow the last audited message
        state.writer.wait_idle(60)
        if state.audit is not None:  # None: --record-only
            state.audit.wait_idle(60)


def train_run(url: str, arch: str, kind: str, seed: int, steps: int, at: int,
              schedule: str = "constant", optimizer_name: str = "adam") -> dict[str, Any]:
    """Train one run with capture attached; returns its run_id, validation curve, epoch size."""
    task, model = build(arch, seed)
    criterion = nn.CrossEntropyLoss()
    optimizer = make_optimizer(optimizer_name, model, LEARNING_RATES[arch])
    base_lr = optimizer.param_groups[0]["lr"]
    run = capture.attach(model, probe=(task.x_train, task.y_train),
                         heldout=(task.x_val, task.y_val), probe_size=400, url=url,
                         every=SNAPSHOT_EVERY, overhead_budget=None, criterion=criterion,
                         optimizer=optimizer, seed=seed,
                         run_name=Scenario(kind, arch, seed, schedule, optimizer_name).name)
    injection = Injection(kind, at, model, optimizer, task, seed)
    steps_per_epoch = len(task.y_train) // BATCH
    generator = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(task.y_train), generator=generator)[:32]
    val_curve: list[tuple[int, float]] = []
    try:
        model.train()
        for step in range(steps):
            injection.at_start(step)
            pool = subset if injection.train_subset(step) else None
            n = len(pool) if pool is not None else len(task.y_train)
            idx = torch.randint(0, n, (BATCH,), generator=generator)
            idx = pool[idx] if pool is not None else idx
            xb, yb = injection.batch(step, task.x_train[idx], task.y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(xb), yb)
            loss.backward()
            injection.before_step(step)
            for group in optimizer.param_groups:
                group["lr"] = (base_lr * SCHEDULES[schedule](step / steps)
                               * injection.lr_factor(step))
            optimizer.step()
            if (step + 1) % steps_per_epoch == 0:
                val_loss = _validate(model, criterion, task)
                val_curve.append((step, val_loss))
                run.log(epoch=(step + 1) // steps_per_epoch, val_loss=val_loss)
    finally:
        run.detach()
    return {"run_id": run.run_id, "val_curve": val_curve, "steps_per_epoch": steps_per_epoch}


@torch.no_grad()
def _validate(model: nn.Module, criterion: nn.Module, task: Any) -> float:
    model.eval()
    try:
        return float(criterion(model(task.x_val), task.y_val))
    finally:
        model.train()


#: The causal validation-loss rule the engine is measured against (issue 15): an epoch's
#: validation loss above this factor times its best so far and above the previous epoch's.
VAL_RISE = 1.25


def validation_trigger(curve: list[tuple[int, float]], at: int) -> int | None:
    """First epoch-end step at or after ``at`` where the validation-loss rule fires (see
    :data:`VAL_RISE` and docs/scenarios.md): what a user watching the validation curve with a
    simple rule would notice, and when."""
    best = previous = math.inf
    for step, value in curve:
        if step >= at and value > VAL_RISE * best and value > previous:
            return step
        best, previous = min(best, value), value
    return None


def run_one(server: RunningServer, scenario: Scenario, steps: int, at: int) -> dict[str, Any]:
    """Train, audit and score one scenario: the row of the result file."""
    t0 = time.monotonic()
    result = train_run(server.url, scenario.arch, scenario.kind, scenario.seed, steps, at,
                       scenario.schedule, scenario.optimizer)
    settle(server)
    return scenario_row(scenario, result["run_id"], steps, at,
                        server.store.alerts(result["run_id"]), result["val_curve"],
                        result["steps_per_epoch"], time.monotonic() - t0)


def scenario_row(scenario: Scenario, run_id: str, steps: int, at: int,
                 alerts: list[dict[str, Any]], curve: list[tuple[int, float]],
                 steps_per_epoch: int, seconds: float) -> dict[str, Any]:
    """One run's row from its stored alerts and validation curve (live or from a kept DB)."""
    healthy = scenario.kind == HEALTHY
    trigger = validation_trigger(curve, 0 if healthy else at)
    return {"scenario": scenario.name, "kind": scenario.kind, "family": FAMILY[scenario.kind],
            "architecture": scenario.arch, "seed": scenario.seed,
            "schedule": scenario.schedule, "optimizer": scenario.optimizer,
            "injected_step": None if healthy else at,
            "steps": steps, "steps_per_epoch": steps_per_epoch, "run_id": run_id,
            **score_run(alerts, incidents_of(run_id, alerts), scenario.kind, at,
                        trigger, steps_per_epoch, curve[-1][0] if curve else None, steps),
            "val_loss": [[step, round(value, 5)] for step, value in curve],
            "seconds": round(seconds, 1)}


def run_benchmark(split: str, db_path: Path, steps: int, at: int, only: str | None = None,
                  projector: bool = True, audit: bool = True) -> dict[str, Any]:
    check_disjoint()
    torch.set_num_threads(1)
    rows = []
    started = time.monotonic()
    settings = ServerSettings(db_path=db_path, port=0, projector=projector, audit=audit)
    with serve_in_thread(settings) as server:
        for scenario in SPLITS[split]:
            if only is not None and only not in scenario.name:
                continue
            row = run_one(server, scenario, steps, at)
            rows.append(row)
            log.info("%-44s detected=%s first=%s %s diagnosis=%s lead=%s FA=%d (%.0fs)",
                     row["scenario"], row["detected"], row["first_alert_step"], row["detector"],
                     row["diagnosis"], row["lead_steps"], row["false_alarms"], row["seconds"])
    summary = summarise(rows)
    return {"split": split, "steps": steps, "injected_step": at, "runs": rows,
            "summary": summary, "seconds": round(time.monotonic() - started, 1)}


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the audit benchmarks' in-process server: --no-projector, --json, --db."""
    parser.add_argument("--no-projector", dest="projector", action="store_false",
                        help="no 2D maps (the map_* detectors stay inactive; spares the CPU)")
    add_json_argument(parser, required=True)
    parser.add_argument("--db", type=Path, default=None,
                        help="keep the runs in this DuckDB file (default: a temporary one)")


def log_progress_only() -> None:
    """The benchmark's own progress lines at INFO; the server's and capture's warnings only."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    for noisy in ("sentrycam.capture", "sentrycam.backend", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=tuple(s for s in SPLITS if s != "quick"),
                        default="test",
                        help="which split to run (default: the test split, only scored)")
    parser.add_argument("--quick", action="store_true",
                        help="a few short runs with fresh seeds (CI); overrides --split")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per run (default 360, quick 240); failures start halfway")
    parser.add_argument("--only", default=None,
                        help="run only the split's scenarios whose name contains this text")
    add_server_arguments(parser)
    parser.add_argument("--record-only", dest="audit", action="store_false",
                        help="no audit engine: only train and keep the runs (--db), to be "
                             "audited later with scenario_replay.py and scored with "
                             "scenario_rescore.py")
    args = parser.parse_args(argv)
    log_progress_only()
    split = "quick" if args.quick else args.split
    steps = args.steps or (240 if args.quick else 360)
    recorder = Recorder("scenarios", args)
    with tempfile.TemporaryDirectory() as tmp:
        db_path = args.db if args.db is not None else Path(tmp) / "scenarios.duckdb"
        report = run_benchmark(split, db_path, steps, steps // 2, args.only,
                               args.projector, args.audit)
    rows = [{"kind": kind, **figures} for kind, figures in report["summary"]["kinds"].items()]
    totals = {key: value for key, value in report["summary"].items() if key != "kinds"}
    recorder.write(args.json, rows, runs=report["runs"], totals=totals, split=split,
                   quick=args.quick, steps=report["steps"],
                   injected_step=report["injected_step"], seconds=report["seconds"])
    print(render(report["summary"]))
    print(f"total {report['seconds']:.0f} s; per-run results in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
