"""Scoring of the scenario benchmark: one run's row, the summary per kind, the printed table.

Detection: a severity >= 2 alert confirmed at or after the injected step. False alarm: a
severity >= 2 alert confirmed before it, or anywhere in a healthy run. Diagnosis: that of the
first incident confirmed at or after the injected step; correct when it equals the kind's
family, ``unknown`` an abstain (counted apart, not as wrong). Risk-coverage: the detected
failures ranked by the diagnosis' confidence; at each coverage (the share diagnosed, most
confident first) the risk is the share of those diagnoses that are wrong.

Geometry against scalars: the family of each detector (``Detector.family``: geometry of the
probe's representations, training signals, local statistics) gives, per detected failure, the
family that confirmed first and the lead of the first geometry alert over the first alert of
any other family (the best scalar alert; positive: geometry was earlier). Event-time AUPRC:
every step of every run is one prediction, scored by the highest severity (0-3) of the alerts
open at that step (developing until confirmed), labelled positive from the injected step on in
a failure run and negative elsewhere; the area under the precision-recall curve of all steps
pooled (average precision over the severity thresholds).
"""

from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence

from results import distribution
from scenario_plan import FAMILY, HEALTHY

from sentrycam.backend.audit.detectors import FAMILIES, detector_families
from sentrycam.backend.audit.detectors.base import GEOMETRY

UNKNOWN = "unknown"
#: Severity levels an alert can hold (0: no alert open).
LEVELS = 4


def _confirmed(alerts: Sequence[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    out = []
    for alert in alerts:
        step = (alert.get("evidence") or {}).get("confirmed_step")
        if alert["severity"] >= 2 and step is not None:
            out.append((int(step), alert))
    return sorted(out, key=lambda pair: pair[0])


def _diagnosis(incidents: Sequence[Mapping[str, Any]], kind: str, at: int) -> dict[str, Any]:
    first = next((i for i in incidents if kind != HEALTHY and i["confirmed_step"] >= at), None)
    if first is None:
        return {"diagnosis": None, "diagnosis_confidence": None, "diagnosis_correct": None}
    decided = first["diagnosis"]
    return {"diagnosis": decided, "diagnosis_confidence": first["confidence"],
            "diagnosis_correct": None if decided == UNKNOWN else decided == FAMILY[kind]}


def _families(after: Sequence[tuple[int, Mapping[str, Any]]]) -> dict[str, Any]:
    """Which detector family confirmed first after the injection, the first step of each
    family, and the lead of the first geometry alert over the first non-geometry one."""
    family_of = detector_families()
    first: dict[str, int] = {}
    for step, alert in after:
        first.setdefault(family_of.get(alert["detector"], UNKNOWN), step)
    scalar = [step for family, step in first.items() if family != GEOMETRY]
    geometry = first.get(GEOMETRY)
    return {"first_family": family_of.get(after[0][1]["detector"], UNKNOWN) if after else None,
            "family_first_steps": {family: first.get(family) for family in FAMILIES},
            "geometry_lead_steps": (min(scalar) - geometry
                                    if geometry is not None and scalar else None)}


def event_time_counts(alerts: Sequence[Mapping[str, Any]], steps: int,
                      at: int | None) -> dict[str, list[int]]:
    """Steps of one run by score (index: the highest severity open at the step, 0-3) and label
    (``positive``: at or after the injected step ``at``; None for a healthy run)."""
    score = [0] * steps
    for alert in alerts:
        evidence = alert.get("evidence") or {}
        first, last = int(alert["step"]), int(evidence.get("last_step") or alert["step"])
        confirmed = evidence.get("confirmed_step")
        for t in range(max(first, 0), min(last, steps - 1) + 1):
            held = alert["severity"] if confirmed is not None and t >= confirmed else 1
            score[t] = max(score[t], held)
    counts = {"positive": [0] * LEVELS, "negative": [0] * LEVELS}
    for t, level in enumerate(score):
        counts["positive" if at is not None and t >= at else "negative"][level] += 1
    return counts


def event_time_auprc(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Average precision of the pooled per-step scores of ``rows`` (see the module)."""
    positive = [sum(r["event_time"]["positive"][lv] for r in rows) for lv in range(LEVELS)]
    negative = [sum(r["event_time"]["negative"][lv] for r in rows) for lv in range(LEVELS)]
    total = sum(positive)
    if not total:
        return None
    area, recall, tp, fp = 0.0, 0.0, 0, 0
    for level in reversed(range(LEVELS)):  # thresholds from the highest severity down
        tp, fp = tp + positive[level], fp + negative[level]
        if tp + fp:
            area += (tp / total - recall) * tp / (tp + fp)
            recall = tp / total
    return area


def score_run(alerts: Sequence[Mapping[str, Any]], incidents: Sequence[Mapping[str, Any]],
              kind: str, at: int, trigger: int | None, steps_per_epoch: int,
              last_val_step: int | None = None, steps: int | None = None) -> dict[str, Any]:
    """One run's figures from its stored alerts and incidents (``incidents_of``); ``steps``
    (the run's length) adds the event-time counts."""
    confirmed = _confirmed(alerts)
    healthy = kind == HEALTHY
    early = [a for s, a in confirmed if healthy or s < at]
    after = [(s, a) for s, a in confirmed if not healthy and s >= at]
    result: dict[str, Any] = {
        "detected": bool(after), "first_alert_step": None, "detector": None, "layer": None,
        "severity": None, "val_trigger_step": trigger, "lead_steps": None, "lead_epochs": None,
        "lead_at_least_steps": None,
        "false_alarms": len(early),
        "false_alarm_detectors": sorted({a["detector"] for a in early}),
        "alerts_total": len(alerts), "incidents": len(incidents),
        **_diagnosis(incidents, kind, at), **_families(after)}
    if steps is not None:
        result["event_time"] = event_time_counts(alerts, steps, None if healthy else at)
    if after:
        step, alert = after[0]
        result.update(first_alert_step=step, detector=alert["detector"], layer=alert["layer"],
                      severity=max(a["severity"] for _, a in after))
        if trigger is not None:
            result["lead_steps"] = trigger - step
            result["lead_epochs"] = round((trigger - step) / steps_per_epoch, 2)
        elif last_val_step is not None:
            # The validation rule never confirmed within the run: the lead is at least this.
            result["lead_at_least_steps"] = last_val_step - step
    return result


def _diagnosis_figures(group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    diagnosed = [r for r in group if r.get("diagnosis") is not None]
    decided = [r for r in diagnosed if r["diagnosis"] != UNKNOWN]
    return {"diagnosed": len(diagnosed), "abstained": len(diagnosed) - len(decided),
            "diagnosis_correct": sum(bool(r["diagnosis_correct"]) for r in decided),
            "diagnosis_accuracy": (sum(bool(r["diagnosis_correct"]) for r in decided)
                                   / len(decided) if decided else None),
            "diagnoses": sorted({r["diagnosis"] for r in diagnosed})}


def _kind_summary(kind: str, group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    leads = [r["lead_steps"] for r in group if r["lead_steps"] is not None]
    # Censored runs (validation never confirmed) count with their lower bound: the median
    # of the mix is then a lower bound of the true median lead.
    bounded = leads + [r["lead_at_least_steps"] for r in group
                       if r["lead_at_least_steps"] is not None]
    lead_epochs = [r["lead_epochs"] for r in group if r["lead_epochs"] is not None]
    spread = distribution(leads)
    return {
        "family": FAMILY[kind], "runs": len(group),
        "detected": sum(r["detected"] for r in group),
        "false_alarms": sum(r["false_alarms"] for r in group),
        "median_lead_steps": statistics.median(leads) if leads else None,
        "median_lead_epochs": statistics.median(lead_epochs) if lead_epochs else None,
        "mean_lead_steps": spread["mean"], "max_lead_steps": spread["max"],
        "min_lead_steps": min(leads) if leads else None,
        "mean_run_seconds": distribution(r["seconds"] for r in group)["mean"],
        "max_run_seconds": max(r["seconds"] for r in group),
        "runs_with_val_trigger": len(leads),
        "median_lead_steps_at_least": statistics.median(bounded) if bounded else None,
        "first_detectors": sorted({r["detector"] for r in group if r["detector"]}),
        **_family_figures(group), **_diagnosis_figures(group)}


def _family_figures(group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Geometry against scalars for one kind (see the module)."""
    leads = [r["geometry_lead_steps"] for r in group if r.get("geometry_lead_steps") is not None]
    timed = [r for r in group if "event_time" in r]
    return {"first_family": {family: sum(r.get("first_family") == family for r in group)
                             for family in FAMILIES},
            "median_geometry_lead_steps": statistics.median(leads) if leads else None,
            "runs_with_geometry_and_scalar": len(leads),
            "event_time_auprc": event_time_auprc(timed) if timed else None}


def risk_coverage(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """(coverage, risk) of the decided diagnoses, most confident first (see the module)."""
    diagnosed = [r for r in rows if r.get("diagnosis") is not None]
    decided = sorted((r for r in diagnosed if r["diagnosis"] != UNKNOWN),
                     key=lambda r: -r["diagnosis_confidence"])
    points, wrong = [], 0
    for n, row in enumerate(decided, start=1):
        wrong += not row["diagnosis_correct"]
        points.append({"coverage": round(n / len(diagnosed), 3), "risk": round(wrong / n, 3),
                       "confidence": row["diagnosis_confidence"]})
    return points


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = {kind: _kind_summary(kind, [r for r in rows if r["kind"] == kind])
             for kind in sorted({r["kind"] for r in rows})}
    failures = [r for r in rows if r["kind"] != HEALTHY]
    healthy = [r for r in rows if r["kind"] == HEALTHY]
    diagnosis = _diagnosis_figures(failures)
    return {"kinds": kinds,
            "detection_rate": (sum(r["detected"] for r in failures) / len(failures)
                               if failures else None),
            "diagnosis_accuracy": diagnosis["diagnosis_accuracy"],
            "abstain_rate": (diagnosis["abstained"] / diagnosis["diagnosed"]
                             if diagnosis["diagnosed"] else None),
            "risk_coverage": risk_coverage(failures),
            "healthy_runs": len(healthy),
            "healthy_false_alarms": sum(r["false_alarms"] for r in healthy),
            "false_alarms_per_10_healthy": (10 * sum(r["false_alarms"] for r in healthy)
                                            / len(healthy) if healthy else None),
            "pre_injection_false_alarms": sum(r["false_alarms"] for r in failures),
            "event_time_auprc": event_time_auprc([r for r in rows if "event_time" in r])}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(summary: dict[str, Any]) -> str:
    lines = [f"{'kind':22} {'family':12} {'runs':>4} {'det':>4} {'diag ok':>7} {'abst':>4} "
             f"{'FA':>3} {'lead(st)':>9} {'lead(ep)':>9} {'n':>2} {'lead>=':>7}  first detectors"]
    for kind, s in summary["kinds"].items():
        lines.append(
            f"{kind:22} {s['family']:12} {s['runs']:>4} {s['detected']:>4} "
            f"{s['diagnosis_correct']:>7} {s['abstained']:>4} {s['false_alarms']:>3} "
            f"{_fmt(s['median_lead_steps'], '.0f'):>9} {_fmt(s['median_lead_epochs'], '.2f'):>9} "
            f"{s['runs_with_val_trigger']:>2} {_fmt(s['median_lead_steps_at_least'], '.0f'):>7}"
            f"  {', '.join(s['first_detectors'])}")
    rate = summary["detection_rate"]
    lines.append(f"detection rate {rate:.1%}" if rate is not None else "no failure runs")
    lines.append(f"diagnosis accuracy {_fmt(summary['diagnosis_accuracy'], '.1%')} of decided, "
                 f"abstain {_fmt(summary['abstain_rate'], '.1%')} of diagnosed")
    lines.append(f"healthy runs {summary['healthy_runs']}, severity>=2 alerts "
                 f"{summary['healthy_false_alarms']} "
                 f"({summary['false_alarms_per_10_healthy']} per 10 runs); pre-injection "
                 f"false alarms in failure runs {summary['pre_injection_false_alarms']}; "
                 f"event-time AUPRC {_fmt(summary['event_time_auprc'], '.3f')}")
    lines.append(f"{'kind':22} {'first family: geometry/training/local':>37} "
                 f"{'geometry lead (st)':>18} {'n':>2} {'AUPRC':>6}")
    for kind, s in summary["kinds"].items():
        counts = "/".join(str(s["first_family"][family]) for family in FAMILIES)
        lines.append(f"{kind:22} {counts:>37} {_fmt(s['median_geometry_lead_steps'], '.0f'):>18} "
                     f"{s['runs_with_geometry_and_scalar']:>2} "
                     f"{_fmt(s['event_time_auprc'], '.3f'):>6}")
    return "\n".join(lines)
