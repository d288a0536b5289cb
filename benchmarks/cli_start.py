"""CLI start-up: wall time of ``sentrycam inspect --db F`` and ``sentrycam alerts --db F``.

F is a real DuckDB file written by the store (one finished run: its probe set, ``--steps``
scalar messages and a few snapshots). Each command runs ``--repeats`` times in a fresh
interpreter, as a user's shell would start it, through a thin wrapper that calls the CLI's
``main`` and then reports whether ``torch`` was imported; the interpreter alone
(``python -c pass``) is timed the same way as the floor. Reported per command: mean, p50, p95 and
max seconds, the exit status and whether torch was imported.

    python benchmarks/cli_start.py [--repeats 10] [--steps 200] [--json OUT]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder, add_json_argument, distribution  # noqa: E402

from sentrycam.backend.store import Store  # noqa: E402
from sentrycam.protocol.messages import (SPLIT_TRAIN, ProbeSet, RunEnd, RunStart,  # noqa: E402
                                        Scalars, Snapshot)

MARK = "cli-start-bench: torch imported="
#: Runs the CLI's main with the given arguments, then says whether torch got imported.
WRAPPER = f"""
import sys
from sentrycam.backend.cli import main
code = 1
try:
    code = main(sys.argv[1:])
finally:
    sys.stderr.write("\\n{MARK}" + str("torch" in sys.modules) + "\\n")
sys.exit(code)
"""
RUN_ID = "c" * 32
PROBE = 256


def make_database(path: Path, steps: int, seed: int = 0) -> None:
    """One finished run in a new store file: probe set float16 features [PROBE, 32] at every
    50th step, scalars at every step."""
    rng = np.random.default_rng(seed)
    ids = np.arange(PROBE, dtype=np.int64)
    labels = rng.integers(0, 10, PROBE).astype(np.int64)
    messages = [RunStart(RUN_ID, "cli-start", time.time() - steps, {"lr": 1e-3}),
                ProbeSet(RUN_ID, ids, labels, np.full(PROBE, SPLIT_TRAIN, np.uint8))]
    for step in range(steps):
        messages.append(Scalars(RUN_ID, step, time.time(), {"loss": 2.3 / (1 + 0.01 * step)}))
        if step % 50 == 0:
            messages.append(Snapshot(RUN_ID, step, 0, ids, {
                "pred": rng.integers(0, 10, PROBE).astype(np.int64),
                "confidence": rng.random(PROBE).astype(np.float32)},
                {"fc:input": rng.standard_normal((PROBE, 32)).astype(np.float16)}))
    messages.append(RunEnd(RUN_ID, steps - 1, "finished"))
    with Store(path) as store:
        store.write(list(enumerate(messages, start=1)))


def time_command(argv: list[str], repeats: int) -> dict[str, object]:
    """Run ``argv`` ``repeats`` times; wall-time spread (s), exit statuses, torch imported."""
    seconds, codes, torch_seen = [], set(), set()
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        seconds.append(time.perf_counter() - started)
        codes.add(done.returncode)
        torch_seen |= {line[len(MARK):] == "True" for line in done.stderr.splitlines()
                       if line.startswith(MARK)}
    spread = distribution(seconds)
    return {**{f"{key}_s": spread[key] for key in ("mean", "p50", "p95", "max")},
            "repeats": repeats, "exit_codes": sorted(codes),
            "torch_imported": (None if not torch_seen else True in torch_seen)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="runs per command")
    parser.add_argument("--steps", type=int, default=200, help="scalar steps in the run")
    add_json_argument(parser)
    args = parser.parse_args()
    recorder = Recorder("cli_start", args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "cli.duckdb"
        make_database(db, args.steps)
        commands = {"python -c pass": [sys.executable, "-c", "pass"],
                    "sentrycam inspect --db F": [sys.executable, "-c", WRAPPER, "inspect",
                                                 "--db", str(db)],
                    "sentrycam alerts --db F": [sys.executable, "-c", WRAPPER, "alerts",
                                                "--db", str(db)]}
        for label, argv in commands.items():
            row = {"command": label, **time_command(argv, args.repeats)}
            rows.append(row)
            print(f"{label:<26} mean {row['mean_s']:.2f} s  p95 {row['p95_s']:.2f} s  max "
                  f"{row['max_s']:.2f} s  exit {row['exit_codes']}  torch imported "
                  f"{row['torch_imported']}", flush=True)
    recorder.write(args.json, rows)
    return 0 if all(row["exit_codes"] == [0] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
