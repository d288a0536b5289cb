"""Scoring of the scenario benchmark: one run's row, the summary per kind, the printed table.

Detection: a severity >= 2 alert confirmed at or after the injected step. False alarm: a
severity >= 2 alert confirmed before it, or anywhere in a healthy run. Diagnosis: that of the
first incident confirmed at or after the injected step; correct when it equals the kind's
family, ``unknown`` an abstain (counted apart, not as wrong). Risk-coverage: the detected
failures ranked by the diagnosis' confidence; at each coverage (the share diagnosed, most
confident first) the risk is the share of those diagnoses that are wrong.
"""

from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence

from results import distribution
from scenario_plan import FAMILY, HEALTHY

UNKNOWN = "unknown"


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


def score_run(alerts: Sequence[Mapping[str, Any]], incidents: Sequence[Mapping[str, Any]],
              kind: str, at: int, trigger: int | None, steps_per_epoch: int,
              last_val_step: int | None = None) -> dict[str, Any]:
    """One run's figures from its stored alerts and incidents (``incidents_of``)."""
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
        **_diagnosis(incidents, kind, at)}
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
        **_diagnosis_figures(group)}


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
            "pre_injection_false_alarms": sum(r["false_alarms"] for r in failures)}


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
                 f"false alarms in failure runs {summary['pre_injection_false_alarms']}")
    return "\n".join(lines)
