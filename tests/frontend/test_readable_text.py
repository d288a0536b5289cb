"""What the dashboard writes for a person: an alert's evidence as a plot and one line (never
raw JSON), and the projection quality numbers explained on hover."""

from __future__ import annotations

from sentrycam.frontend.alert_evidence import evidence_html, summary
from sentrycam.frontend.quality_text import explain, quality_html
from sentrycam.projector.quality import (TEMPORAL_RANKING, neighbour_metric, trust_metric,
                                         temporal_neighbour_metric)

EVIDENCE = {"steps": [0, 5, 10, 15, 20], "values": [1.0, 1.1, 0.9, 2.5, 4.0],
            "series": "log grad_norm", "baseline": 1.0, "scale": 0.1, "drift_cusum": 5.25,
            "confirmed_step": None}


def test_evidence_reads_as_a_plot_and_one_line():
    text = summary(EVIDENCE)
    assert text == ("log grad_norm: 5 points, steps 0-20, last 4; baseline 1 +- 0.1; "
                    "drift cusum 5.25")
    cell = evidence_html(EVIDENCE)
    assert cell.count("<svg") == 1 and "stroke-dasharray" in cell  # series and its baseline
    assert "{" not in cell  # no JSON
    assert evidence_html(None) == "" and evidence_html({}) == ""


def test_evidence_without_a_series_is_still_summarised():
    assert summary({"best_loss": 0.0012, "spike_steps": [3, 9, 12, 40, 41]}) == (
        "evidence: best loss 0.0012; spike steps [3, 9, 12, ...]")
    assert "<svg" not in evidence_html({"best_loss": 0.0012})


def test_every_quality_metric_the_worker_writes_is_explained_with_its_good_direction():
    names = [neighbour_metric(15), trust_metric(15), TEMPORAL_RANKING,
             temporal_neighbour_metric(5)]
    for name in names:
        assert "higher is better" in explain(name), name
    assert explain(trust_metric(15)).endswith("k = 15")
    assert "lower is faster" in explain("update_s")
    line = quality_html({TEMPORAL_RANKING: -0.34, "update_s": 5.459})
    assert "temporal_ranking <b>-0.340</b>" in line and "update_s <b>5.459</b>" in line
    assert line.count("title='") == 2
