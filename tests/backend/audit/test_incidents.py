"""Incidents from stored alerts: grouping in time and by linked causes, the diagnosis rules and
their abstain, the route and the CLI against a real DuckDB file (findings folded by the real
AlertBook into the real store)."""

from __future__ import annotations

import json

import httpx
import pytest

from sentrycam.backend.audit.alerts import AlertBook, Finding
from sentrycam.backend.audit.diagnosis import (CAUSES, DIAGNOSES, UNKNOWN, Evidence, cause_of,
                                               diagnose, scores)
from sentrycam.backend.audit.incidents import JOIN_GAP_STEPS, LINKED_GAP_STEPS, incidents_of
from sentrycam.backend.cli import main
from sentrycam.backend.store import Store
from sentrycam.backend.testing import serve_in_thread
from sentrycam.protocol.messages import RunStart

RUN = "r1"

#: The healthy demo's wobble (issue 15): six severity-2 alerts at one step.
WOBBLE = (("confidence_collapse", None), ("entropy_drift", None),
          ("loss_distribution_shift", None), ("class_separation", "fc1:output"),
          ("class_separation", "fc2:output"), ("map_davies_bouldin", "fc2:output"))


def _fold(store: Store, findings: list[Finding]) -> None:
    """Fold findings into alerts stored in ``store`` as the engine does, and close them."""
    book = AlertBook(RUN, lambda alert: store.upsert_alert(RUN, alert.record(), alert.alert_id))
    for step in sorted({f.step for f in findings}):
        book.fold([f for f in findings if f.step == step])
    book.flush()


def _store(store: Store, findings: list[Finding]) -> list[dict]:
    store.write([(1, RunStart(run_id=RUN, name="one", started_at=0.0))])
    _fold(store, findings)
    return incidents_of(RUN, store.alerts(RUN))


def _finding(detector: str, step: int, level: int = 2, layer: str | None = None) -> Finding:
    return Finding(detector=detector, step=step, level=level, layer=layer, magnitude=5.0,
                   message=f"{detector} fired", suggestion="try something")


def _weights_jump(step: int, level: int = 3) -> list[Finding]:
    """A learning-rate blow-up's first sign in the tuning runs: the weights of several layers
    jump at once (a loss that rises first, with no weight jump, reads as a data problem)."""
    return [_finding("weight_drift", step, level, layer) for layer in ("fc1", "fc2")]


def test_alerts_at_one_step_from_several_detectors_are_one_incident(store):
    found = _store(store, [_finding(name, 400, layer=layer) for name, layer in WOBBLE])
    assert len(found) == 1
    incident = found[0]
    assert len(incident["alert_ids"]) == 6 and incident["severity"] == 2
    assert incident["start_step"] == incident["end_step"] == 400
    assert incident["diagnosis"] in DIAGNOSES and 0 <= incident["confidence"] <= 1
    assert incident["suggestion"]


def test_separate_events_are_separate_incidents_and_close_ones_join(store):
    findings = [*_weights_jump(100), _finding("loss_divergence", 105),
                _finding("confidence_collapse", 100 + JOIN_GAP_STEPS),  # a snapshot later
                _finding("overfitting", 900)]
    found = _store(store, findings)
    assert [(i["start_step"], len(i["alert_ids"])) for i in found] == [(100, 4), (900, 1)]
    assert found[0]["diagnosis"] == "instability" and found[0]["severity"] == 3
    assert found[1]["diagnosis"] == "overfitting"


def test_causally_linked_alerts_join_across_a_longer_gap(store):
    gap = (JOIN_GAP_STEPS + LINKED_GAP_STEPS) // 2
    findings = [_finding("vanishing_gradients", 200), _finding("stagnation", 200 + gap),
                _finding("dead_units", 200 + 2 * gap)]  # linked to neither: a new incident
    assert cause_of("vanishing_gradients") == cause_of("stagnation") == "stalled"
    found = _store(store, findings)
    assert [i["detectors"] for i in found] == [["vanishing_gradients", "stagnation"],
                                               ["dead_units"]]
    assert found[0]["diagnosis"] == "stalled" and found[1]["diagnosis"] == "collapse"


def test_developing_alerts_alone_are_no_incident_but_are_early_evidence(store):
    findings = [_finding("oscillation", 50, level=1),
                _finding("vanishing_gradients", 300, level=1), _finding("stagnation", 310)]
    found = _store(store, findings)
    assert len(found) == 1
    assert found[0]["start_step"] == 300 and found[0]["confirmed_step"] == 310
    assert incidents_of(RUN, store.alerts(RUN), min_severity=1)[0]["start_step"] == 50


def test_a_long_developing_drift_does_not_chain_events_together(store):
    drift = [_finding("gradient_explosion", step, level=1) for step in range(80, 400, 10)]
    found = _store(store, drift + [_finding("dead_units", 180, 3), _finding("overfitting", 390)])
    assert [(i["start_step"], i["diagnosis"]) for i in found] == [(180, "collapse"),
                                                                 (390, "overfitting")]


def test_grouping_uses_what_was_known_when_each_alert_opened(store):
    # Oscillation develops from step 100 and is confirmed only at 200: when dead units are
    # confirmed at 140 it was a developing point at 100, too far back to share the event.
    drift = [_finding("oscillation", step, level=1 if step < 200 else 2)
             for step in range(100, 260, 10)]
    found = _store(store, drift + [_finding("dead_units", 140)])
    assert [(i["start_step"], i["detectors"]) for i in found] == [(100, ["oscillation"]),
                                                                 (140, ["dead_units"])]
    assert found[0]["end_step"] == 250 and found[0]["confirmed_step"] == 200


def test_every_cause_can_be_diagnosed_from_one_of_its_own_signals_alone():
    for cause in CAUSES:
        found = [diagnose([Evidence(signal, 10, 2)]) for signal in sorted(cause.signals)]
        assert any(f.diagnosis == cause.name for f in found), (cause.name, found)
        right = next(f for f in found if f.diagnosis == cause.name)
        assert right.suggestion == cause.suggestion


def test_mixed_evidence_lists_the_other_cause_and_unexplained_evidence_abstains():
    found = diagnose([Evidence("dead_units", 10, 2), Evidence("overfitting", 10, 2)])
    leaders = [found.diagnosis] * (found.diagnosis != UNKNOWN) + [n for n, _ in found.runners_up]
    assert set(leaders[:2]) == {"collapse", "overfitting"}
    unexplained = diagnose([Evidence("some_new_detector", 10, 3)])
    assert unexplained.diagnosis == UNKNOWN and unexplained.confidence == 0


def test_what_fired_first_weighs_most():
    first = scores([Evidence("weight_drift", 10, 2, 2), Evidence("dead_units", 40, 2)])
    later = scores([Evidence("dead_units", 10, 2), Evidence("weight_drift", 40, 2, 2)])
    assert first["instability"] > later["instability"] and later["collapse"] > first["collapse"]
    assert first["instability"] > first["collapse"]
    clear = diagnose([Evidence("weight_drift", 10, 3, 2), Evidence("loss_divergence", 12, 2),
                      Evidence("dead_units", 40, 2)])
    assert clear.diagnosis == "instability"


def test_route_serves_incidents_and_refuses_bad_requests(make_settings, store):
    _store(store, [_finding(name, 400, layer=layer) for name, layer in WOBBLE])
    store.close()
    with serve_in_thread(make_settings()) as server:
        response = httpx.get(f"{server.url}/api/runs/{RUN}/incidents")
        assert response.status_code == 200
        [incident] = response.json()
        assert incident["run_id"] == RUN and len(incident["alert_ids"]) == 6
        assert httpx.get(f"{server.url}/api/runs/nope/incidents").status_code == 404
        bad = httpx.get(f"{server.url}/api/runs/{RUN}/incidents", params={"min_severity": 9})
        assert bad.status_code == 422 and "min_severity" in bad.text
        schema = httpx.get(f"{server.url}/openapi.json").json()
        declared = schema["paths"]["/api/runs/{run_id}/incidents"]["get"]["responses"]
        assert {"200", "404", "422"} <= set(declared)


def test_cli_lists_incidents_from_a_file(tmp_path, capsys):
    db = tmp_path / "cli.duckdb"
    with Store(db) as store:
        _store(store, [*_weights_jump(100), _finding("loss_divergence", 101)])
    assert main(["incidents", "--db", str(db), "--run", RUN, "--json"]) == 0
    [incident] = json.loads(capsys.readouterr().out)
    assert incident["diagnosis"] == "instability" and incident["start_step"] == 100
    assert main(["incidents", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "instability (confidence" in text and "suggestion: " in text
    assert main(["incidents", "--db", str(db), "--run", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("severity", [1, 2, 3])
def test_incident_severity_is_the_highest_of_its_alerts(store, severity):
    found = incidents_of(RUN, [], 1) + _store(store, [_finding("oscillation", 7, severity),
                                                      _finding("outlier_batch", 8, 1)])
    assert incidents_of(RUN, store.alerts(RUN), 1)[0]["severity"] == severity
    assert len(found) == (1 if severity >= 2 else 0)
