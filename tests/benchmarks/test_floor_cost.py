"""The floor-cost benchmark counts the firings the schedule's floor really makes: issue 16's
300-step figures (6 maps, telemetry on half the steps), fading after step 300."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import floor_cost  # noqa: E402  (a script folder, not a package)


def test_the_floor_at_300_steps_is_six_maps_and_telemetry_on_half_the_steps():
    assert floor_cost.floor_firings("snapshot", 300) == 6
    assert floor_cost.floor_firings("telemetry", 300) == 150


def test_the_floor_fades_after_300_steps():
    maps = [floor_cost.floor_firings("snapshot", n) for n in (300, 1197, 6000)]
    telemetry = [floor_cost.floor_firings("telemetry", n) for n in (300, 1197, 6000)]
    assert maps == sorted(maps) and maps[-1] < 6000 / 200  # grows as a log, not linearly
    assert telemetry[-1] - telemetry[1] < telemetry[1] - telemetry[0]  # ever further apart
