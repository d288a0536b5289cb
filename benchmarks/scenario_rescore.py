"""Score scenario runs again from their kept alerts, with the incidents and diagnosis rules of
the checked-out code (no training: incidents are derived from the stored alerts).

    python benchmarks/scenario_rescore.py A.json A.duckdb [B.json B.duckdb ...] --json OUT

The pairs are result files of ``benchmarks/scenarios.py ... --db FILE`` and their databases;
their runs are pooled into one summary (scenario_score.py). Used to score the diagnosis
before and after a change of the rules on the same runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder, add_json_argument  # noqa: E402
from scenario_score import render, score_run, summarise  # noqa: E402

from sentrycam.backend.audit.incidents import incidents_of  # noqa: E402
from sentrycam.backend.store import Store  # noqa: E402


def rescore(result: Path, db: Path) -> list[dict[str, Any]]:
    """The runs of one result file, scored again from the alerts kept in ``db``."""
    rows = json.loads(result.read_text())["runs"]
    with Store(db, read_only=True) as store:
        for row in rows:
            alerts = store.alerts(row["run_id"])
            at = row["injected_step"] if row["injected_step"] is not None else row["steps"] // 2
            curve = row["val_loss"]
            row.update(score_run(alerts, incidents_of(row["run_id"], alerts), row["kind"], at,
                                 row["val_trigger_step"], row["steps_per_epoch"],
                                 curve[-1][0] if curve else None))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="pairs: result JSON, its --db file")
    add_json_argument(parser, required=True)
    args = parser.parse_args(argv)
    if len(args.files) % 2:
        parser.error("give pairs of result JSON and DuckDB file")
    recorder = Recorder("scenarios", {"files": [str(path) for path in args.files]})
    rows = [row for result, db in zip(args.files[::2], args.files[1::2])
            for row in rescore(result, db)]
    summary = summarise(rows)
    kinds = [{"kind": kind, **figures} for kind, figures in summary["kinds"].items()]
    totals = {key: value for key, value in summary.items() if key != "kinds"}
    recorder.write(args.json, kinds, runs=rows, totals=totals)
    print(render(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
