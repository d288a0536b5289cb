"""Score scenario runs kept in ``--db`` files, as ``scenarios.py`` scores them live.

    python benchmarks/scenario_rescore.py --split test --db A.duckdb [--db B.duckdb ...] --json OUT

For a split run in several processes (``scenarios.py --only ... --db ...``) or stopped early:
every run stored in the files that ended becomes one row (its scenario read back from the run name, its
alerts and validation curve from the store; a name seen twice keeps the later file's run), and
the result file has the shape ``scenarios.py`` writes, so ``report.py`` renders it alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder, add_json_argument  # noqa: E402
from scenario_plan import SPLITS, Scenario  # noqa: E402
from scenario_score import render, summarise  # noqa: E402
from scenarios import scenario_row  # noqa: E402

from sentrycam.backend.store import Store  # noqa: E402
from sentrycam.protocol.signals import VAL_LOSS  # noqa: E402


def _seconds(run: dict[str, Any]) -> float:
    start, end = run.get("created_at"), run.get("ended_at") or run.get("updated_at")
    if not start or not end:
        return 0.0
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def stored_rows(path: Path, plan: dict[str, Scenario]) -> dict[str, dict[str, Any]]:
    """Rows by scenario name of the runs in one kept DB that belong to ``plan``."""
    store = Store(path, read_only=True)
    rows = {}
    try:
        for run in store.run_summaries():
            scenario = plan.get(run.get("name") or "")
            if scenario is None or run.get("status") == "running" or run["last_step"] is None:
                continue  # not in the plan, or cut off by a stopped benchmark
            columns = store.scalars(run["run_id"], [VAL_LOSS.name])
            curve = sorted((int(s), float(v)) for s, v in zip(columns["step"], columns["value"]))
            steps = int(run["last_step"]) + 1
            steps_per_epoch = curve[0][0] + 1 if curve else steps
            rows[scenario.name] = scenario_row(
                scenario, run["run_id"], steps, steps // 2, store.alerts(run["run_id"]), curve,
                steps_per_epoch, _seconds(run))
    finally:
        store.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=sorted(SPLITS), default="test")
    parser.add_argument("--db", type=Path, action="append", required=True,
                        help="a DuckDB file scenarios.py kept (--db); repeat for several")
    add_json_argument(parser, required=True)
    args = parser.parse_args(argv)
    recorder = Recorder("scenarios", {**vars(args), "db": [str(p) for p in args.db]})
    plan = {scenario.name: scenario for scenario in SPLITS[args.split]}
    found: dict[str, dict[str, Any]] = {}
    for path in args.db:
        found.update(stored_rows(path, plan))
    rows = [found[name] for name in plan if name in found]
    summary = summarise(rows)
    steps = rows[0]["steps"] if rows else None
    recorder.write(args.json, [{"kind": k, **v} for k, v in summary["kinds"].items()],
                   runs=rows, totals={k: v for k, v in summary.items() if k != "kinds"},
                   split=args.split, quick=False, steps=steps,
                   injected_step=steps // 2 if steps else None,
                   seconds=round(sum(r["seconds"] for r in rows), 1),
                   missing=[name for name in plan if name not in found])
    print(render(summary))
    print(f"{len(rows)} of {len(plan)} runs of the {args.split} split scored")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
