"""The scenario benchmark's scoring (benchmarks/scenario_score.py, scenarios.validation_trigger):
the validation-loss rule, geometry against scalars, and event-time AUPRC, on alert records
shaped as ``Store.alerts`` returns them."""

from __future__ import annotations

import pytest

from scenario_score import event_time_auprc, score_run, summarise  # noqa: E402  (benchmarks/)
from scenarios import validation_trigger  # noqa: E402

from sentrycam.backend.audit.detectors import FAMILIES, detector_families


def _alert(detector: str, step: int, last: int, severity: int = 2,
           confirmed: int | None = None) -> dict:
    confirmed = step if confirmed is None and severity >= 2 else confirmed
    return {"alert_id": step, "detector": detector, "layer": None, "step": step,
            "severity": severity, "evidence": {"last_step": last, "confirmed_step": confirmed}}


def test_every_alert_name_has_one_of_the_three_families():
    families = detector_families()
    assert set(families.values()) == set(FAMILIES)
    assert families["class_separation"] == families["map_knn_consistency"] == "geometry"
    assert families["dead_units"] == "local_statistics"
    assert families["loss_divergence"] == "training_signals"


def test_the_validation_rule_fires_on_a_rise_above_its_best_and_the_previous_epoch():
    curve = [(9, 2.0), (19, 1.0), (29, 1.1), (39, 1.3), (49, 1.2), (59, 1.4)]
    assert validation_trigger(curve, 0) == 39  # 1.3 > 1.25 x 1.0 and > 1.1
    assert validation_trigger(curve, 40) == 59  # 1.2 is below the previous epoch's 1.3
    assert validation_trigger(curve[:3], 0) is None


def test_geometry_lead_is_measured_against_the_first_scalar_alert():
    alerts = [_alert("knn_consistency", 110, 150), _alert("loss_divergence", 130, 160),
              _alert("dead_units", 125, 140), _alert("gradient_explosion", 50, 60, severity=1)]
    row = score_run(alerts, [], "lr_spike", 100, None, 10, steps=200)
    assert row["detected"] and row["first_family"] == "geometry"
    assert row["family_first_steps"] == {"geometry": 110, "training_signals": 130,
                                         "local_statistics": 125}
    assert row["geometry_lead_steps"] == 15  # local statistics confirmed at 125
    summary = summarise([{**row, "kind": "lr_spike", "seconds": 1.0}])
    kind = summary["kinds"]["lr_spike"]
    assert kind["first_family"]["geometry"] == 1 and kind["median_geometry_lead_steps"] == 15


def test_event_time_counts_score_each_step_by_the_alerts_open_then():
    alert = _alert("loss_divergence", 100, 119, severity=3, confirmed=105)
    row = score_run([alert], [], "lr_spike", 100, None, 10, steps=200)
    assert row["event_time"] == {"positive": [80, 5, 0, 15], "negative": [100, 0, 0, 0]}
    # Thresholds severity 3, >= 1, >= 0: recall 0.15, 0.2, 1 at precision 1, 1, 0.5.
    assert event_time_auprc([row]) == pytest.approx(0.15 + 0.05 + 0.8 * 0.5)
    early = score_run([_alert("outlier_batch", 40, 49)], [], "healthy", 100, None, 10,
                      steps=200)
    assert early["false_alarms"] == 1 and early["event_time"]["negative"][2] == 10
    assert event_time_auprc([row, early]) == pytest.approx(_sklearn_ap([row, early]))


def _sklearn_ap(rows: list[dict]) -> float:
    """The same figure from scikit-learn's average precision over the expanded steps."""
    from sklearn.metrics import average_precision_score

    labels, scores = [], []
    for row in rows:
        for name, label in (("positive", 1), ("negative", 0)):
            for level, count in enumerate(row["event_time"][name]):
                labels += [label] * count
                scores += [level] * count
    return float(average_precision_score(labels, scores))
