"""The audit scenario benchmark in its quick form: real capture -> server -> engine runs with
injected failures and healthy controls; every failure is found, no healthy run alarms."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_quick_scenarios_detect_failures_without_false_alarms(tmp_path):
    out = tmp_path / "scenarios.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scenarios.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    runs = report["runs"]
    failures = [r for r in runs if r["kind"] != "healthy"]
    healthy = [r for r in runs if r["kind"] == "healthy"]
    assert len(failures) >= 3 and len(healthy) >= 2
    missed = [r["scenario"] for r in failures if not r["detected"]]
    assert not missed, f"failures not detected with severity >= 2: {missed}"
    for run in failures:
        assert run["first_alert_step"] >= run["injected_step"]
        assert run["severity"] >= 2 and run["detector"]
    assert sum(r["false_alarms"] for r in runs) == 0, [
        (r["scenario"], r["false_alarm_detectors"]) for r in runs if r["false_alarms"]]
    assert "detection rate" in done.stdout  # the summary table was printed
