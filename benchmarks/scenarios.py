"""Audit scenario benchmark: injected failures and healthy runs through capture -> server -> engine.

    python benchmarks/scenarios.py [--quick] --json OUT

One in-process sentrycam server (``sentrycam.backend.testing.serve_in_thread``: real uvicorn
on loopback, real DuckDB file, the real audit engine) serves the whole benchmark; every run
streams into it with ``capture.attach(url=...)``.
For each run it reports the scenario, failure kind, architecture, seed, injected step, whether a
severity >= 2 alert was confirmed at or after the injection, the first such alert (step,
detector, severity), its lead over the validation-loss trigger (the same causal rule applied
to the per-epoch validation loss) in steps and epochs, and false alarms (severity >= 2 alerts
confirmed before the injection, or anywhere in a healthy run). Then a summary per kind: the
rows of the result file (lead: median, mean and the range over the runs with a trigger).
See docs/scenarios.md for the scenarios and the trigger rules.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder, add_json_argument, distribution  # noqa: E402
from scenario_models import Injection, build  # noqa: E402

from sentrycam import capture  # noqa: E402
from sentrycam.backend.audit.detectors.outputs import snapshot_watch  # noqa: E402
from sentrycam.backend.settings import ServerSettings  # noqa: E402
from sentrycam.backend.testing import RunningServer, serve_in_thread  # noqa: E402

log = logging.getLogger("sentrycam.scenarios")

KINDS = ("lr_spike", "slow_divergence", "label_noise", "dead_units", "vanishing_gradients",
         "overfitting", "forgetting", "optimizer_corruption")
#: Kind -> family, for the summary (the bar asks for positive lead on the first three).
FAMILY = {"lr_spike": "instability", "slow_divergence": "instability",
          "optimizer_corruption": "instability", "dead_units": "collapse",
          "vanishing_gradients": "collapse", "label_noise": "data", "overfitting": "overfitting",
          "forgetting": "forgetting", "healthy": "healthy"}
LEARNING_RATES = {"mlp": 2e-3, "cnn": 6e-3, "gru": 3e-3}
BATCH = 32
SNAPSHOT_EVERY = 25


def settle(server: RunningServer) -> None:
    """Wait until everything received is stored and audited."""
    state = server.app.state
    for _ in range(3):  # an alert write can follow the last audited message
        state.writer.wait_idle(60)
        state.audit.wait_idle(60)


def train_run(url: str, arch: str, kind: str, seed: int, steps: int, at: int) -> dict[str, Any]:
    """Train one run with capture attached; returns its run_id, validation curve, epoch size."""
    task, model = build(arch, seed)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATES[arch])
    run = capture.attach(model, probe=(task.x_train, task.y_train),
                         heldout=(task.x_val, task.y_val), probe_size=400, url=url,
                         every=SNAPSHOT_EVERY, overhead_budget=None, criterion=criterion,
                         optimizer=optimizer, run_name=f"{kind}-{arch}-s{seed}", seed=seed)
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


def validation_trigger(curve: list[tuple[int, float]], at: int) -> int | None:
    """First step (at or after ``at``) where the validation loss is confirmed degraded by the
    same rule the snapshot detectors use: distance from the best value in units of its own
    movement, level >= 2 (see docs/scenarios.md)."""
    watch = snapshot_watch(higher_is_better=False)
    for step, value in curve:
        level, _ = watch.observe(step, value)
        if level >= 2 and step >= at:
            return step
    return None


def score_run(alerts: list[dict[str, Any]], kind: str, at: int, trigger: int | None,
              steps_per_epoch: int, last_val_step: int | None = None) -> dict[str, Any]:
    confirmed = []
    for alert in alerts:
        evidence = alert.get("evidence") or {}
        step = evidence.get("confirmed_step")
        if alert["severity"] >= 2 and step is not None:
            confirmed.append((int(step), alert))
    confirmed.sort(key=lambda pair: pair[0])
    healthy = kind == "healthy"
    early = [a for s, a in confirmed if healthy or s < at]
    after = [(s, a) for s, a in confirmed if not healthy and s >= at]
    result: dict[str, Any] = {
        "detected": bool(after), "first_alert_step": None, "detector": None, "layer": None,
        "severity": None, "val_trigger_step": trigger, "lead_steps": None, "lead_epochs": None,
        "lead_at_least_steps": None,
        "false_alarms": len(early),
        "false_alarm_detectors": sorted({a["detector"] for a in early}),
        "alerts_total": len(alerts)}
    if after:
        step, alert = after[0]
        result.update(first_alert_step=step, detector=alert["detector"], layer=alert["layer"],
                      severity=max(a["severity"] for _, a in after))
        if trigger is not None:
            result["lead_steps"] = trigger - step
            result["lead_epochs"] = round((trigger - step) / steps_per_epoch, 2)
        elif last_val_step is not None:
            # The validation rule never confirmed within the run: the lead is at least this.
            result["lead_at_least_steps"] = last_val_step - step
    return result


def plan(quick: bool) -> Iterator[tuple[str, str, int]]:
    """(kind, arch, seed) of every run."""
    if quick:
        yield from [("lr_spike", "mlp", 0), ("dead_units", "mlp", 0), ("forgetting", "mlp", 0),
                    ("healthy", "mlp", 0), ("healthy", "mlp", 1)]
        return
    for arch in ("mlp", "cnn", "gru"):
        for kind in KINDS:
            for seed in (0, 1):
                yield kind, arch, seed
        for seed in range(4):
            yield "healthy", arch, 10 + seed


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for kind in sorted({r["kind"] for r in rows}):
        group = [r for r in rows if r["kind"] == kind]
        leads = [r["lead_steps"] for r in group if r["lead_steps"] is not None]
        # Censored runs (validation never confirmed) count with their lower bound: the median
        # of the mix is then a lower bound of the true median lead.
        bounded = leads + [r["lead_at_least_steps"] for r in group
                           if r["lead_at_least_steps"] is not None]
        lead_epochs = [r["lead_epochs"] for r in group if r["lead_epochs"] is not None]
        spread = distribution(leads)
        kinds[kind] = {
            "family": FAMILY[kind], "runs": len(group),
            "detected": sum(r["detected"] for r in group),
            "false_alarms": sum(r["false_alarms"] for r in group),
            "median_lead_steps": statistics.median(leads) if leads else None,
            "median_lead_epochs": statistics.median(lead_epochs) if lead_epochs else None,
            "mean_lead_steps": spread["mean"], "max_lead_steps": spread["max"],
            "min_lead_steps": min(leads) if leads else None,
            "mean_run_seconds": distribution(r["seconds"] for r in group)["mean"],
            "max_run_seconds": max(r["seconds"] for r in group),
            "runs_with_val_trigger": len(leads),
            "median_lead_steps_at_least": statistics.median(bounded) if bounded else None,
            "first_detectors": sorted({r["detector"] for r in group if r["detector"]})}
    failures = [r for r in rows if r["kind"] != "healthy"]
    healthy = [r for r in rows if r["kind"] == "healthy"]
    return {"kinds": kinds,
            "detection_rate": (sum(r["detected"] for r in failures) / len(failures)
                               if failures else None),
            "healthy_runs": len(healthy),
            "healthy_false_alarms": sum(r["false_alarms"] for r in healthy),
            "false_alarms_per_10_healthy": (10 * sum(r["false_alarms"] for r in healthy)
                                            / len(healthy) if healthy else None),
            "pre_injection_false_alarms": sum(r["false_alarms"] for r in failures)}


def render(summary: dict[str, Any]) -> str:
    lines = [f"{'kind':22} {'family':12} {'runs':>4} {'det':>4} {'FA':>3} {'lead(st)':>9} "
             f"{'lead(ep)':>9} {'n':>2} {'lead>=':>7}  first detectors"]
    for kind, s in summary["kinds"].items():
        lead = "-" if s["median_lead_steps"] is None else f"{s['median_lead_steps']:.0f}"
        lead_ep = "-" if s["median_lead_epochs"] is None else f"{s['median_lead_epochs']:.2f}"
        bound = "-" if s["median_lead_steps_at_least"] is None else \
            f"{s['median_lead_steps_at_least']:.0f}"
        lines.append(f"{kind:22} {s['family']:12} {s['runs']:>4} {s['detected']:>4} "
                     f"{s['false_alarms']:>3} {lead:>9} {lead_ep:>9} "
                     f"{s['runs_with_val_trigger']:>2} {bound:>7}  "
                     f"{', '.join(s['first_detectors'])}")
    rate = summary["detection_rate"]
    lines.append(f"detection rate {rate:.1%}" if rate is not None else "no failure runs")
    lines.append(f"healthy runs {summary['healthy_runs']}, severity>=2 alerts "
                 f"{summary['healthy_false_alarms']} "
                 f"({summary['false_alarms_per_10_healthy']} per 10 runs); pre-injection "
                 f"false alarms in failure runs {summary['pre_injection_false_alarms']}")
    return "\n".join(lines)


def run_benchmark(quick: bool, db_path: Path) -> dict[str, Any]:
    steps, at = (240, 120) if quick else (360, 180)
    torch.set_num_threads(1)
    rows = []
    started = time.monotonic()
    with serve_in_thread(ServerSettings(db_path=db_path, port=0)) as server:
        for kind, arch, seed in plan(quick):
            t0 = time.monotonic()
            result = train_run(server.url, arch, kind, seed, steps, at)
            settle(server)
            trigger = validation_trigger(result["val_curve"], at if kind != "healthy" else 0)
            row = {"scenario": f"{kind}-{arch}-s{seed}", "kind": kind, "family": FAMILY[kind],
                   "architecture": arch, "seed": seed,
                   "injected_step": at if kind != "healthy" else None,
                   "steps": steps, "steps_per_epoch": result["steps_per_epoch"],
                   "run_id": result["run_id"],
                   **score_run(server.store.alerts(result["run_id"]), kind, at, trigger,
                               result["steps_per_epoch"],
                               result["val_curve"][-1][0] if result["val_curve"] else None),
                   "val_loss": [[step, round(value, 5)] for step, value in result["val_curve"]],
                   "seconds": round(time.monotonic() - t0, 1)}
            rows.append(row)
            log.info("%-34s detected=%s first=%s %s lead=%s FA=%d (%.0fs)", row["scenario"],
                     row["detected"], row["first_alert_step"], row["detector"],
                     row["lead_steps"], row["false_alarms"], row["seconds"])
    summary = summarise(rows)
    return {"quick": quick, "steps": steps, "injected_step": at, "runs": rows,
            "summary": summary, "seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few short runs (CI)")
    add_json_argument(parser, required=True)
    parser.add_argument("--db", type=Path, default=None,
                        help="keep the runs in this DuckDB file (default: a temporary one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    for noisy in ("sentrycam.capture", "sentrycam.backend", "uvicorn", "sentrycam.capture.run"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    recorder = Recorder("scenarios", args)
    with tempfile.TemporaryDirectory() as tmp:
        db_path = args.db if args.db is not None else Path(tmp) / "scenarios.duckdb"
        report = run_benchmark(args.quick, db_path)
    rows = [{"kind": kind, **figures} for kind, figures in report["summary"]["kinds"].items()]
    totals = {key: value for key, value in report["summary"].items() if key != "kinds"}
    recorder.write(args.json, rows, runs=report["runs"], totals=totals, quick=report["quick"],
                   steps=report["steps"], injected_step=report["injected_step"],
                   seconds=report["seconds"])
    print(render(report["summary"]))
    print(f"total {report['seconds']:.0f} s; per-run results in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
