"""The diagnosis model on evidence of real runs: per failure kind, the evidence an incident of a
tuning-split run carried (written by benchmarks/diagnosis_fit.py --cases from the runs the model
was fitted on: the real detectors' alerts, grouped by the real incident rule) is diagnosed as
the kind's family; and the model's structure: known causes only, probabilities, ties abstain,
unknown evidence carries no weight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentrycam.backend.audit import diagnosis_model
from sentrycam.backend.audit.diagnosis import (CAUSES, FIRST, SPREAD, UNKNOWN, Evidence,
                                               base_detector, decide, diagnose, features,
                                               scores)

CASES = json.loads((Path(__file__).parent / "diagnosis_cases.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[case["kind"] for case in CASES])
def test_each_kind_of_failure_is_diagnosed_as_its_family(case):
    evidence = [Evidence(*item) for item in case["evidence"]]
    found = diagnose(evidence)
    assert found.diagnosis == case["family"], (case["scenario"], found)
    assert 0 < found.confidence <= 1
    assert all(cause != found.diagnosis for cause, _ in found.runners_up)


def test_every_family_of_the_benchmark_has_a_case():
    assert {case["family"] for case in CASES} == {cause.name for cause in CAUSES}


def test_the_model_speaks_only_of_known_causes_and_features():
    causes = {cause.name for cause in CAUSES}
    assert set(diagnosis_model.BIAS) <= causes and set(diagnosis_model.WEIGHTS) <= causes
    for table in diagnosis_model.WEIGHTS.values():
        assert set(table) <= diagnosis_model.FEATURES
    for name in diagnosis_model.FEATURES:
        assert base_detector(name.removesuffix(FIRST).removesuffix(SPREAD)) == \
            name.removesuffix(FIRST).removesuffix(SPREAD)
    assert 0 <= diagnosis_model.TIE_MARGIN < 1


def test_probabilities_sum_to_one_and_unknown_detectors_carry_no_weight():
    evidence = [Evidence("gradient_explosion", 10, 3), Evidence("loss_divergence", 12, 2)]
    probabilities = scores(evidence)
    assert sum(probabilities.values()) == pytest.approx(1.0)
    with_new = scores(evidence + [Evidence("a_new_detector", 11, 3)])
    # A new detector shifts the firing ranks of the others only.
    assert set(with_new) == set(probabilities)
    nothing = diagnose([Evidence("a_new_detector", 10, 3)])
    assert nothing.diagnosis == UNKNOWN and nothing.confidence == 0


def test_features_weigh_severity_order_and_spread():
    found = features([Evidence("dead_units", 10, 3, layers=2),
                      Evidence("map_davies_bouldin", 40, 1),
                      Evidence("davies_bouldin", 40, 2, layers=1)])
    assert found["dead_units"] == 1.5 and found["dead_units" + FIRST] == 1
    assert found["dead_units" + SPREAD] == 1 and "davies_bouldin" + SPREAD not in found
    assert found["davies_bouldin"] == pytest.approx(0.7)  # the stronger of map and features


def test_a_tie_abstains_and_a_clear_lead_decides():
    assert decide({"instability": 0.45, "data": 0.4, "stalled": 0.15}, 0.1) == UNKNOWN
    assert decide({"instability": 0.6, "data": 0.3, "stalled": 0.1}, 0.1) == "instability"
    assert decide({"instability": 0.0, "data": 0.0}, 0.1) == UNKNOWN
