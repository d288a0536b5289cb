"""Regenerate every table of figures in docs/benchmarks.md from benchmarks/results/*.json.

Each result file ``benchmarks/results/NAME.json`` (written by a benchmark's ``--json``, in the
shape of ``benchmarks/results.py``) fills the block of the docs between
``<!-- results:NAME -->`` and ``<!-- /results -->``: the command that produced it, then its
table, every row with the date and the 1-minute load average the run started and ended under.
Everything outside the blocks is hand-written and left as it is. A result file without a block,
or a block without a result file, is an error.

    python benchmarks/report.py            # rewrite docs/benchmarks.md
    python benchmarks/report.py --check    # exit 1 when the docs are out of date
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import ROOT, ResultError, load  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results -->)",
                   re.S)

Row = dict[str, Any]
Column = tuple[str, Callable[[Row], str]]


def num(value: Any, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals and thousands separators; "-" for None."""
    return "-" if value is None else f"{value:,.{digits}f}"


def audit_label(row: Row) -> str:
    """"off", or "on" with the engine's kind (rows before the audit process: no kind)."""
    if row.get("audit") is False:
        return "off"
    return f"on ({row['audit_engine']})" if "audit_engine" in row else "on"


def spread(row: Row, keys: tuple[str, ...], digits: int = 2, suffix: str = "_s") -> str:
    """Several figures of one distribution, e.g. "0.21 / 0.30 / 0.41"."""
    return " / ".join(num(row.get(key + suffix), digits) for key in keys)


def _actions(row: Row) -> str:
    actions = row.get("actions") or {}
    if not actions:
        return "-"
    return (f"{actions['answered']}/{actions['actions']}: "
            f"{spread(actions, ('mean', 'p50', 'p95', 'max'))}")


def _lead(row: Row) -> str:
    if row["median_lead_steps"] is None:
        return f"- ({row['runs_with_val_trigger']})"
    return (f"{num(row['median_lead_steps'], 0)} / {num(row['median_lead_epochs'])} / "
            f"{num(row['mean_lead_steps'], 0)} / {num(row['min_lead_steps'], 0)}-"
            f"{num(row['max_lead_steps'], 0)} ({row['runs_with_val_trigger']})")


TABLES: dict[str, list[Column]] = {
    "capture_overhead": [
        ("model", lambda r: r["model"]), ("setting", lambda r: r["setting"]),
        ("server", lambda r: r.get("placement", "shared")),
        ("plain step p50 / p95 (ms)", lambda r: f"{num(r['median_ms'], 3)} / "
                                               f"{num(r['p95_ms'], 3)}"),
        ("step-time ratio p50", lambda r: num(r["p50_ratio"], 4)),
        ("mean ratio", lambda r: num(r["mean_ratio"], 4) + (
            "" if r.get("mean_ratio_se") is None else f" ± {num(r['mean_ratio_se'], 4)}")),
        ("p95 / p99 / max ratio", lambda r: spread(r, ("p95", "p99", "max"), 3, "_ratio")),
        ("agent-measured overhead", lambda r: num(r["overhead"], 4)),
        ("dropped", lambda r: num(r["dropped"], 0)),
        ("snapshots", lambda r: num(r.get("snapshots"), 0)),
        ("steps with telemetry", lambda r: "-" if r.get("telemetry_share") is None
         else f"{r['telemetry_share']:.0%}"),
        ("steps per round", lambda r: num(r.get("round_steps"), 0))],
    "capture_breakdown": [
        ("model", lambda r: r["model"]), ("activity", lambda r: r["activity"]),
        ("CPU ms in the run", lambda r: num(r["cpu_ms"], 1)),
        ("per step (us)", lambda r: num(r["us_per_step"], 1)),
        ("share of plain training CPU", lambda r: f"{r['share']:.2%}"),
        ("calls", lambda r: num(r["calls"], 0))],
    "floor_cost": [
        ("model", lambda r: r["model"]), ("run steps", lambda r: num(r["run_steps"], 0)),
        ("plain step (ms CPU)", lambda r: num(r["step_ms"], 3)),
        ("floor maps x bare map (ms)", lambda r: f"{r['maps']} x {num(r['map_ms'], 3)}"),
        ("floor telemetry x bare firing (us)",
         lambda r: f"{r['telemetry_firings']} x {num(r['telemetry_us'], 1)}"),
        ("bare floor / training (ms)",
         lambda r: f"{num(r['floor_ms'], 1)} / {num(r['training_ms'], 0)}"),
        ("share of training", lambda r: f"{r['floor_share']:.2%}"),
        ("within the budget", lambda r: f"{'yes' if r['fits'] else 'no'} "
                                        f"({r['budget']:.0%})")],
    "framework_overhead": [
        ("model", lambda r: r["model"]), ("setting", lambda r: r["setting"]),
        ("plain step p50 / p95 (ms)", lambda r: f"{num(r['median_ms'], 3)} / "
                                               f"{num(r['p95_ms'], 3)}"),
        ("step-time ratio p50 / mean", lambda r: spread(r, ("p50", "mean"), 4, "_ratio")),
        ("p95 / p99 / max ratio", lambda r: spread(r, ("p95", "p99", "max"), 3, "_ratio")),
        ("agent-measured overhead / dropped",
         lambda r: f"{num(r['overhead'], 4)} / {num(r['dropped'], 0)}")],
    "local_server_cost": [
        ("model", lambda r: r["model"]), ("server", lambda r: r["setting"]),
        ("watched step mean / p95 / p99 (ms)",
         lambda r: spread(r, ("mean", "p95", "p99"), 1, "_ms")),
        ("watched ratio mean / p95 / p99", lambda r: spread(r, ("mean", "p95", "p99"), 3,
                                                            "_ratio")),
        ("plain beside the projector: ratio mean / p95 / p99",
         lambda r: spread(r, ("beside_mean", "beside_p95", "beside_p99"), 3, "_ratio")),
        ("maps drawn", lambda r: num(r["maps"], 0)),
        ("busy to the end", lambda r: {None: "-", True: "yes", False: "no"}[
            r["busy_to_the_end"]]),
        ("projector warm-up (s)", lambda r: num(r["warm_up_s"], 1)),
        ("plain blocks' spread", lambda r: num(r["plain_spread"], 3))],
    "ingest_memory": [
        ("mode", lambda r: r["mode"]),
        ("clients x snapshot (MB)", lambda r: f"{r['clients']} x {num(r['snapshot_mb'], 1)}"),
        ("rows x dim", lambda r: f"{r['rows']:,} x {r['dim']}"),
        ("data (MB)", lambda r: num(r["data_mb"], 0)),
        ("server RSS idle / peak (MB)",
         lambda r: f"{num(r['idle_rss_mb'], 0)} / {num(r['peak_rss_mb'], 0)}"),
        ("growth / data", lambda r: num(r["growth_mb"] / r["data_mb"])),
        ("time to store mean / max (s)", lambda r: spread(r, ("store_s_mean", "store_s_max"), 2,
                                                          "")),
        ("stored whole", lambda r: f"{r['stored_whole']}/{r['clients']}"),
        ("failures", lambda r: "; ".join(r["failures"]) or "-")],
    "projector_pool": [
        ("worker processes", lambda r: str(r["workers"])), ("runs", lambda r: str(r["runs"])),
        ("maps", lambda r: num(r["maps"], 0)), ("seconds", lambda r: num(r["seconds"], 1)),
        ("maps / s", lambda r: num(r["maps_per_s"], 3)),
        ("speed-up", lambda r: f"{num(r['speedup'])}x"),
        ("warm-up (s)", lambda r: num(r["warm_up_s"], 0)),
        ("skipped / errors", lambda r: f"{r['skipped']} / {r['errors']}")],
    "cli_start": [
        ("command", lambda r: f"`{r['command']}`"), ("runs", lambda r: str(r["repeats"])),
        ("mean / p50 / p95 / max (s)", lambda r: spread(r, ("mean", "p50", "p95", "max"))),
        ("exit status", lambda r: ", ".join(map(str, r["exit_codes"]))),
        ("torch imported", lambda r: {True: "yes", False: "no", None: "-"}[
            r["torch_imported"]])],
    "scenarios": [
        ("kind", lambda r: r["kind"]), ("family", lambda r: r["family"]),
        ("runs", lambda r: str(r["runs"])), ("detected (sev >= 2)", lambda r: str(r["detected"])),
        ("false alarms", lambda r: str(r["false_alarms"])),
        ("diagnosis right / decided / abstain",
         lambda r: f"{r['diagnosis_correct']} / {r['diagnosed'] - r['abstained']} / "
                   f"{r['abstained']}" if "abstained" in r else "-"),
        ("lead vs val-loss trigger: median steps / epochs / mean / range (runs with a trigger)",
         _lead),
        ("median lead incl. lower bounds (steps)",
         lambda r: num(r["median_lead_steps_at_least"], 1)),
        ("run time mean / max (s)", lambda r: f"{num(r['mean_run_seconds'], 0)} / "
                                              f"{num(r['max_run_seconds'], 0)}"),
        ("first detectors", lambda r: ", ".join(r["first_detectors"]) or "-")],
    "demo_health": [
        ("steps", lambda r: str(r["steps"])), ("seed", lambda r: str(r["seed"])),
        ("incidents", lambda r: str(r["incidents"])),
        ("incidents: steps, diagnosis (detectors)",
         lambda r: "; ".join(f"{i['start_step']}-{i['end_step']} {i['diagnosis']} "
                             f"({', '.join(i['detectors'])})" for i in r["incident_list"]) or "-"),
        ("alerts (sev >= 2) / all", lambda r: f"{r['confirmed_alerts']} / {r['alerts_total']}"),
        ("final val loss / acc", lambda r: f"{num(r['val_loss'], 3)} / {num(r['val_acc'], 3)}"),
        ("run time (s)", lambda r: num(r["seconds"], 0))],
    "dashboard_latency": [
        ("probe samples", lambda r: f"{r['n']:,}"),
        ("projector / maps", lambda r: f"{r['projector']} / {r['render']}"),
        ("projector ready (s)", lambda r: num(r.get("warm_up_s"))),
        ("first map (s)", lambda r: num(r["first_map_s"])),
        ("drawn", lambda r: f"{r['drawn']}/{r['snapshots']}"),
        ("projector skipped", lambda r: str(r["projector_skipped"])),
        ("snapshot -> painted mean / p50 / p95 / p99 / max (s)",
         lambda r: spread(r, ("mean", "p50", "p95", "p99", "max"))),
        ("push / browser bytes per snapshot",
         lambda r: f"{num(r['push_bytes_per_snapshot'], 0)} / "
                   f"{num(r['browser_bytes_per_snapshot'], 0)}"),
        ("user actions answered: mean / p50 / p95 / max (s)", _actions),
        ("action's data in page p50 (s)",
         lambda r: num((r.get("actions") or {}).get("data_in_p50_s"))),
        ("longest task (ms)", lambda r: num(r["longest_task_ms"], 0)),
        ("50 ms timer lag mean / p95 / max (ms)",
         lambda r: spread(r, ("timer_lag_mean", "timer_lag_p95", "timer_lag_max"), 0, "_ms"))],
    "projector_vs_umap": [
        ("sequence", lambda r: r["sequence"]),
        ("time ratio ours / refit: median / mean / p95 / max",
         lambda r: f"{num(r['ratio'], 3)} / "
                   f"{spread(r, ('ratio_mean', 'ratio_p95', 'ratio_max'), 3, '')}"),
        ("ours / refit / warm / aligned mean (s)",
         lambda r: " / ".join(num(r.get(f"{m}_s_mean")) for m in _PROJECTORS)),
        ("nn@15 ours / refit / warm / aligned", lambda r: _per_method(r, "nn")),
        ("trust@15 ours / refit / warm / aligned", lambda r: _per_method(r, "trust")),
        ("temporal ranking ours / refit / warm / aligned", lambda r: _per_method(r, "tr")),
        ("temporal nn@5 ours / refit / warm / aligned", lambda r: _per_method(r, "tnn")),
        ("on CUDA: ratio / mean (s) / nn@15 / TR",
         lambda r: "-" if "ours_cuda_s_mean" not in r else
         f"{num(r['ratio_cuda'], 3)} / {num(r['ours_cuda_s_mean'])} / "
         f"{num(r['nn_ours_cuda'], 3)} / {num(r['tr_ours_cuda'], 3)}"),
        ("targets met", lambda r: "yes" if r["bars_met"] else
         "**no**: " + "; ".join(r.get("shortfalls", [])))],
    "team_load": [
        ("trainers x subscribers", lambda r: f"{r['trainers']} x {r['subscribers_per_run']}"),
        ("steps", lambda r: str(r["steps"])), ("projector", lambda r: r["projector"]),
        ("audit", audit_label),
        ("messages/s (total)", lambda r: f"{num(r['messages_per_s'], 0)} "
                                          f"({r['messages']:,})"),
        ("peak queue", lambda r: str(r["peak_queue_depth"])),
        ("trainer nice", lambda r: str(r.get("trainer_nice", 0))),
        ("server CPU ms / message", lambda r: num(r.get("server_cpu_ms_per_message"))),
        ("its child processes' CPU ms / message",
         lambda r: num(r.get("server_children_cpu_ms_per_message"))),
        ("send -> frame lag mean / p50 / p95 / p99 / max (s)",
         lambda r: spread(r["lag_s"], ("mean", "p50", "p95", "p99", "max"), 2, "")),
        ("detach mean / max (s)", lambda r: spread(r["detach_s"], ("mean", "max"), 2, "")),
        ("maps / snapshots", lambda r: f"{r['maps']} / {r['snapshots']}"),
        ("projector lag p50 / p95 (s)",
         lambda r: spread(r["projector_lag_s"], ("p50", "p95"), 2, "")),
        ("server RSS peak (MB)", lambda r: num(r["server_rss_peak_mb"], 0)),
        ("runs complete", lambda r: f"{r['runs_complete']}/{r['trainers']}"),
        ("lost or duplicated", lambda r: str(len(r["lost_or_duplicated"])))],
    "write_path": [
        ("message kind", lambda r: r["kind"]), ("messages", lambda r: f"{r['messages']:,}"),
        ("decode + check", lambda r: num(r.get("decode_ms"), 3)),
        ("store (batches of the run)", lambda r: num(r.get("store_ms"), 3)),
        ("push frames", lambda r: num(r.get("frames_ms"), 3)),
        ("audit", lambda r: num(r.get("audit_ms"), 3)),
        ("store alone, batches of 1", lambda r: num(r.get("store_alone_ms_batch_1"), 3))],
    "projector_cold_start": [
        ("what", lambda r: {"update": "first update()",
                            "warm_up": "server warm_up()"}[r["what"]]),
        ("numba cache", lambda r: r["cache"]),
        ("snapshot", lambda r: f"{r['points']:,} x {r['dim']}"),
        ("import (s)", lambda r: num(r["import_s"])),
        ("first map / warm-up (s)", lambda r: num(r.get("first_update_s", r.get("warm_up_s")))),
        ("its CPU time (s)",
         lambda r: num(r.get("first_update_cpu_s", r.get("warm_up_cpu_s")))),
        ("fitted map (s)", lambda r: num(r.get("fitted_s"))),
        ("whole process (s)", lambda r: num(r["process_s"]))],
}

#: The projector and its umap-learn baselines, in the order of the table's cells.
_PROJECTORS = ("ours", "umap", "warm", "aligned")


def _per_method(row: Row, metric: str) -> str:
    return " / ".join(num(row.get(f"{metric}_{method}"), 3) for method in _PROJECTORS)


def table(columns: list[Column], rows: list[Row], result: dict[str, Any]) -> list[str]:
    """A markdown table of ``rows``; every row starts with the run's date and load average."""
    load = result["load_1min"]
    when = [("date (UTC)", result["started_utc"][:16].replace("T", " ")),
            ("load 1 min start / end", f"{num(load['start'])} / {num(load['end'])}")]
    lines = ["| " + " | ".join([name for name, _ in when] + [name for name, _ in columns]) + " |",
             "|" + "---|" * (len(when) + len(columns))]
    for row in rows:
        lines.append("| " + " | ".join([value for _, value in when]
                                       + [cell(row) for _, cell in columns]) + " |")
    return lines


def _diagnosis_line(totals: dict[str, Any]) -> list[str]:
    """Scenario diagnosis totals, for result files that have them."""
    if totals.get("diagnosis_accuracy") is None:
        return []
    return [f"Diagnosis right on {totals['diagnosis_accuracy']:.1%} of decided diagnoses; "
            f"abstain (`unknown`) on {totals['abstain_rate']:.1%} of diagnosed failures."]


#: Geometry against scalars, per kind (result files that have it: scenario_score.py).
_FAMILY_COLUMNS: list[Column] = [
    ("kind", lambda r: r["kind"]),
    ("first to confirm: geometry / training signals / local statistics (runs)",
     lambda r: " / ".join(str(n) for n in r["first_family"].values())),
    ("lead of the first geometry alert over the first scalar alert: median steps (runs with "
     "both)", lambda r: f"{num(r['median_geometry_lead_steps'], 0)} "
                        f"({r['runs_with_geometry_and_scalar']})"),
    ("event-time AUPRC", lambda r: num(r["event_time_auprc"], 3))]


def _scenario_lines(result: dict[str, Any]) -> list[str]:
    t = result["totals"]
    rate = "-" if t["detection_rate"] is None else f"{t['detection_rate']:.1%}"
    lines = ["", f"Detection rate {rate}; {t['healthy_runs']} healthy runs with "
             f"{t['healthy_false_alarms']} alerts of severity >= 2;",
             f"{t['pre_injection_false_alarms']} before the injection in failure runs; "
             # a rescore of kept runs trains nothing: no time of its own to give
             f"{num(result.get('seconds'), 0)} s in all."] + _diagnosis_line(t)
    if t.get("event_time_auprc") is not None:
        rows = [r for r in result["rows"] if r["kind"] != "healthy"]
        lines += [f"Event-time AUPRC (all runs' steps pooled) {t['event_time_auprc']:.3f}.", "",
                  "Geometry against scalars (the family that confirmed first after the "
                  "injection; positive lead: geometry first):", "",
                  *table(_FAMILY_COLUMNS, rows, result)]
    return lines


def _extra_lines(result: dict[str, Any]) -> list[str]:
    """Figures a benchmark reports beside its rows (totals, fan-out)."""
    if result["benchmark"] == "scenarios":
        return _scenario_lines(result)
    fanout = result.get("fanout")
    if result["benchmark"] == "dashboard_latency" and fanout:
        columns: list[Column] = [
            ("messages", lambda r: f"{r['messages']:,}"),
            ("subscribers", lambda r: str(r["subscribers"])),
            ("alone median (trials) (s)", lambda r: f"{num(r['seconds_alone'])} ("
             + ", ".join(num(v) for v in r["trials_alone_s"]) + ")"),
            ("with subscribers median (trials) (s)",
             lambda r: f"{num(r['seconds_with_subscribers'])} ("
             + ", ".join(num(v) for v in r["trials_with_subscribers_s"]) + ")"),
            ("ratio", lambda r: num(r["ratio"]))]
        return ["", "Fan-out (ingest timed with and without dashboards subscribed):", "",
                *table(columns, [fanout], result)]
    return []


def display_command(result: dict[str, Any]) -> str:
    """The command line as a reader would type it: ``python`` for the interpreter's path (a
    launcher before it, such as ``taskset -c 0,1``, stays)."""
    words = shlex.split(result["command"])
    at = next((i for i, word in enumerate(words) if Path(word).name.startswith("python")), None)
    return shlex.join(words if at is None else [*words[:at], "python", *words[at + 1:]])


def render(result: dict[str, Any]) -> str:
    """The block of one result file: its command, commit and machine, then its table(s)."""
    columns = TABLES.get(result["benchmark"])
    if columns is None:
        raise ResultError(f"no table defined for benchmark {result['benchmark']!r} "
                          f"(benchmarks/report.py TABLES)")
    machine = result["machine"]
    commit = (result["commit"] or "unknown")[:7] + (
        "+dirty" if (result["commit"] or "").endswith("+dirty") else "")
    lines = [f"`{display_command(result)}`",
             f"(commit {commit}; {machine['cpus']} CPUs{_gpu(machine)}, python "
             f"{machine['python']}, torch "
             f"{machine['torch']}, numpy {machine['numpy']}; {result['started_utc'][11:19]} to "
             f"{result['finished_utc'][11:19]} UTC)", "",
             *table(columns, result["rows"], result), *_extra_lines(result)]
    return "\n".join(lines) + "\n"


def _gpu(machine: dict[str, Any]) -> str:
    return f", {machine['gpu']}" if machine.get("gpu") else ""


def load_all(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Every result file in ``results_dir``, by name (file stem), checked."""
    return {path.stem: load(path) for path in sorted(results_dir.glob("*.json"))}


def update(docs: str, results: dict[str, dict[str, Any]]) -> str:
    """``docs`` with every results block regenerated from ``results``."""
    named = [match["name"] for match in BLOCK.finditer(docs)]
    unused = sorted(set(results) - set(named))
    if unused:
        raise ResultError(f"result file(s) without a block in the docs: {', '.join(unused)} "
                          f"(add <!-- results:NAME --> ... <!-- /results -->)")

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in results:
            raise ResultError(f"the docs have a block for {name!r} but there is no "
                              f"benchmarks/results/{name}.json")
        return match[1] + render(results[name]) + match[4]

    return BLOCK.sub(fill, docs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--check", action="store_true",
                        help="only check that the docs match the results (exit 1 if not)")
    args = parser.parse_args(argv)
    try:
        current = args.docs.read_text()
        wanted = update(current, load_all(args.results))
    except ResultError as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    if args.check:
        if wanted != current:
            print(f"report: {args.docs} is out of date; run python benchmarks/report.py",
                  file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        args.docs.write_text(wanted)
        print(f"report: rewrote the results tables of {args.docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
