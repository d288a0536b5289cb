"""One shape for every benchmark's result file (``--json PATH``), and its reader.

A result file is a JSON object with the keys of :data:`REQUIRED_KEYS`: the benchmark's name, the
exact command line, the UTC date-time it started and ended, the git commit (``+dirty`` when the
tree had uncommitted changes), the machine (CPU count, platform, python, torch and numpy
versions), the 1-minute load average at start and at end, the parsed arguments and ``rows``: a
list of objects, one per line of the benchmark's table in docs/benchmarks.md. A benchmark may
add its own keys beside them (per-run details, say). ``benchmarks/report.py`` renders the docs
tables from these files.

    recorder = Recorder("capture_overhead", args)   # at start: date, load, command
    ...
    recorder.write(args.json, rows)                  # at end: load, rows
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

REQUIRED_KEYS = ("benchmark", "command", "started_utc", "finished_utc", "commit", "machine",
                 "load_1min", "arguments", "rows")


class ResultError(ValueError):
    """A result file that is not in the shape of :data:`REQUIRED_KEYS`."""


def distribution(values: Iterable[float]) -> dict[str, float | int | None]:
    """Mean, median, tail (p95, p99, max) and count of ``values``; None for each figure when
    there are none."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        return {"n": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {"n": int(array.size), "mean": float(array.mean()),
            "p50": float(np.percentile(array, 50)), "p95": float(np.percentile(array, 95)),
            "p99": float(np.percentile(array, 99)), "max": float(array.max())}


def machine() -> dict[str, Any]:
    """What the figures were measured on (versions read without importing the packages)."""
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None
    # The CPUs this process may run on (a benchmark started under taskset sees fewer).
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": cpus, "platform": platform.platform(),
            "python": platform.python_version(), "torch": version("torch"),
            "numpy": version("numpy"), "gpu": _gpu()}


def _gpu() -> str | None:
    """The CUDA device's name where the benchmark has already imported torch and one is
    there (a benchmark that never imports torch is not made to)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def git_commit() -> str | None:
    """HEAD of the checkout the benchmark ran from, ``+dirty`` with uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no")
                         else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Recorder:
    """Notes the start of a benchmark (date, load, command, arguments); :meth:`write` adds the
    end and the rows and writes the file."""

    def __init__(self, benchmark: str, args: argparse.Namespace | dict[str, Any]) -> None:
        self.benchmark = benchmark
        self.arguments = {key: str(value) if isinstance(value, Path) else value
                          for key, value in dict(vars(args) if not isinstance(args, dict)
                                                 else args).items() if key != "json"}
        self.command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
        self.started_utc = _now()
        self.load_start = os.getloadavg()[0]
        self.commit = git_commit()  # the code that runs, before anyone edits the checkout

    def result(self, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        clash = set(extra) & set(REQUIRED_KEYS)
        if clash:
            raise ValueError(f"extra keys {sorted(clash)} would hide required ones")
        return {"benchmark": self.benchmark, "command": self.command,
                "started_utc": self.started_utc, "finished_utc": _now(),
                "commit": self.commit, "machine": machine(),
                "load_1min": {"start": round(self.load_start, 2),
                              "end": round(os.getloadavg()[0], 2)},
                "arguments": self.arguments, "rows": rows, **extra}

    def write(self, path: Path | None, rows: list[dict[str, Any]], **extra: Any) -> None:
        """Write the result file at ``path`` (nothing when None)."""
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.result(rows, **extra), indent=2) + "\n")


def load(path: Path) -> dict[str, Any]:
    """A result file, checked for the required keys (ResultError names what is missing)."""
    try:
        result = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ResultError(f"{path}: not JSON ({error})") from error
    if not isinstance(result, dict):
        raise ResultError(f"{path}: a result file holds a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in result]
    if missing:
        raise ResultError(f"{path}: missing required key(s) {', '.join(missing)} "
                          f"(see benchmarks/results.py)")
    if not isinstance(result["rows"], list) or not all(isinstance(r, dict)
                                                       for r in result["rows"]):
        raise ResultError(f"{path}: 'rows' must be a list of objects")
    for key in ("start", "end"):
        if key not in (result["load_1min"] or {}):
            raise ResultError(f"{path}: missing required key load_1min.{key}")
    return result


def add_json_argument(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """The ``--json PATH`` option every benchmark takes."""
    parser.add_argument("--json", type=Path, default=None, required=required,
                        help="write the results here (the shape of benchmarks/results.py)")
