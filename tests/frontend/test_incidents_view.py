"""Incidents on the dashboard's Python side against a real server: the alerts the audit engine
would store are grouped by the server's incidents route, and the dashboard lists each incident
(expandable to its alerts) and shades it on the curves and the embedding timeline, live."""

from __future__ import annotations

from sentrycam.backend.feed import Change
from sentrycam.frontend.incident_view import diagnosis_text
from sentrycam.protocol.changes import ChangeKind
from tests.frontend.dashboards import drain_until
from tests.live_server import RUN


def _raise(server, step: int, detector: str, severity: int, last_step: int) -> int:
    """Store a confirmed alert as the audit engine does, and announce it."""
    alert_id = server.store.upsert_alert(RUN, {
        "step": step, "detector": detector, "severity": severity, "layer": None,
        "message": f"{detector} fired", "suggestion": "lower the learning rate",
        "evidence": {"steps": [step, last_step], "values": [1.0, 9.0], "series": "loss",
                     "confirmed_step": step, "last_step": last_step}})
    server.app.state.feed.publish([Change(RUN, ChangeKind.ALERT)])
    return alert_id


def test_an_incident_is_listed_with_its_diagnosis_and_shaded_on_the_curves_and_timeline(
        dashboard, server):
    drain_until(dashboard, lambda: dashboard.curves.sources.get("loss") is not None)
    assert dashboard.incidents.empty.visible and not dashboard.incidents.table.visible
    first = _raise(server, 1, "loss_divergence", 3, 2)
    second = _raise(server, 2, "gradient_explosion", 2, 3)  # the same event: one incident
    drain_until(dashboard, lambda: len(dashboard.incidents.incidents) == 1
                and len(dashboard.incidents.incidents[0]["alert_ids"]) == 2)

    incident = dashboard.incidents.incidents[0]  # diagnosed by the server's model
    row = dashboard.incidents.table.value.iloc[0]
    assert row["steps"] == "1-3" and "3 critical" in row["severity"]
    assert row["diagnosis"].startswith(f"{incident['diagnosis']} (confidence ")
    assert row["suggestion"] == incident["suggestion"] and row["alerts"] == 2
    assert not dashboard.incidents.empty.visible and dashboard.incidents.table.visible

    expanded = dashboard.incidents._alerts_of_row(row).object  # what expanding the row shows
    assert "loss_divergence" in expanded and "gradient_explosion" in expanded
    assert expanded.index("loss_divergence") < expanded.index("gradient_explosion")
    assert "sc-evidence-plot" in expanded
    for source in (dashboard.curves.incident_source,
                   dashboard.embedding.timeline.incident_source):
        assert source.data["start"] == [1] and source.data["end"] == [4]  # covers step 3
        assert source.data["severity"] == ["3 critical"]
        assert source.data["diagnosis"] == [diagnosis_text(incident)]
    assert {first, second} == set(incident["alert_ids"])


def test_an_abstaining_diagnosis_reads_as_one():
    text = diagnosis_text({"diagnosis": "unknown", "confidence": 0.31,
                           "runners_up": [{"diagnosis": "stalled", "score": 0.3},
                                          {"diagnosis": "data", "score": 0.25}]})
    assert text == ("unknown: the evidence does not single out one cause (confidence 0.31; "
                    "also stalled 0.30, data 0.25)")
