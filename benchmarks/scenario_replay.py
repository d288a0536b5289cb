"""Audit kept scenario runs again with the checked-out detectors, into a copy of their DB.

    python benchmarks/scenario_replay.py KEPT.duckdb COPY.duckdb [--only=TEXT]
    python benchmarks/scenario_rescore.py --split tuning --db COPY.duckdb --json OUT

The runs' training data (scalars, layer statistics, snapshots) is what ``scenarios.py --db``
stored; only the alerts depend on the detectors. The copy's alerts are dropped and every ended
run is replayed through the engine (``backend/audit/replay.py``: causal, step by step, as the
live engine sees it) with its alerts written, so ``scenario_rescore.py`` and
``diagnosis_fit.py`` read the checked-out detectors' alerts without training again. The kept
file is only read. ``--only`` replays the runs whose name contains a text and leaves the others
out of the copy (several copies of one file, replayed in parallel, are scored together).
``--detectors A,B`` replays only the named detectors and keeps the other detectors' stored
alerts: for a copy replayed with the current detectors, adding new ones costs only their own
time (alerts of one step may then order differently by id than in a full replay).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import duckdb

from sentrycam.backend.audit.replay import replay_run
from sentrycam.backend.store import Store

log = logging.getLogger("sentrycam.scenario_replay")


def replay_copy(kept: Path, copy: Path, only: str = "",
                detectors: list[str] | None = None) -> int:
    """Copy ``kept`` to ``copy``, drop its alerts (only those of ``detectors`` when named) and
    the runs whose name lacks ``only``, replay every ended run; returns the count."""
    shutil.copyfile(kept, copy)
    with duckdb.connect(str(copy)) as con:
        if detectors is None:
            con.execute("DELETE FROM alerts")
        else:
            con.execute("DELETE FROM alerts WHERE list_contains(?, detector)", [detectors])
        con.execute("DELETE FROM runs WHERE NOT contains(coalesce(name, ''), ?)", [only])
    replayed = 0
    with Store(copy) as store:
        for run in store.run_summaries():
            if run.get("status") == "running" or run["last_step"] is None:
                continue  # cut off by a stopped benchmark: not scored either
            started = time.monotonic()
            alerts, _ = replay_run(store, run["run_id"], write=True, detectors=detectors)
            replayed += 1
            log.info("%-46s %3d alerts (%.1fs)", run.get("name"), len(alerts),
                     time.monotonic() - started)
    return replayed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kept", type=Path, help="a DuckDB file scenarios.py kept (--db)")
    parser.add_argument("copy", type=Path, help="where the replayed copy is written")
    parser.add_argument("--only", default="",
                        help="replay (and keep in the copy) only the runs whose name contains "
                             "this text")
    parser.add_argument("--detectors", type=lambda text: text.split(","), default=None,
                        help="replay only these detectors (comma-separated names) and keep "
                             "the other detectors' stored alerts")
    args = parser.parse_args(argv)
    if args.copy.resolve() == args.kept.resolve():
        parser.error("the copy must be another file: the kept runs stay as recorded")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("sentrycam.backend").setLevel(logging.WARNING)
    count = replay_copy(args.kept, args.copy, args.only, args.detectors)
    print(f"{count} runs replayed into {args.copy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
