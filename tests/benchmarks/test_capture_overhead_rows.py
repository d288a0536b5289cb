"""The capture-overhead benchmark's rows: the mean ratio over whole rounds and its standard
error over the cycles, from round times made up here (no training)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import capture_overhead  # noqa: E402  (a script folder, not a package)
from capture_overhead import Round  # noqa: E402


def rounds(walls: list[float]) -> list[Round]:
    return [Round(wall, [wall / 100] * 100, {}) for wall in walls]


def test_the_mean_ratio_is_of_whole_rounds_and_its_error_of_the_cycles():
    plain_a, plain_b = rounds([10.0, 10.4, 9.8]), rounds([10.2, 10.0, 10.0])
    watched = rounds([10.3, 10.5, 10.1])
    row = capture_overhead.ratio_row("cnn", "defaults", 100, watched, [plain_a, plain_b])
    assert row.mean_ratio == pytest.approx(30.9 / 30.2)
    per_cycle = [10.3 / 10.1, 10.5 / 10.2, 10.1 / 9.9]
    assert row.mean_ratio_se == pytest.approx(statistics.stdev(per_cycle) / 3 ** 0.5)
    assert "+- " in row.line()


def test_one_cycle_has_no_error_bar():
    row = capture_overhead.ratio_row("cnn", "A/A", 100, rounds([10.0]), [rounds([10.0])])
    assert row.mean_ratio == 1.0 and row.mean_ratio_se is None and "+-" not in row.line()
