"""An alert's evidence as a person reads it: a small inline plot of the series the detector
fired on, and one line naming the series, its baseline and the detector's other figures.

Detectors give evidence as ``{"steps": [...], "values": [...], "series": name, "baseline":
b, "scale": s}`` (or ``"best"`` and ``"noise_scale"``) plus detector-specific figures (see
``backend/audit/detectors/base.py``); anything else is summarised by its keys.
"""

from __future__ import annotations

import html
import math
from typing import Any, Mapping

#: Size of the inline plot (CSS pixels).
SPARK_W, SPARK_H = 150, 34
#: Figures shown after the series (the rest of a long evidence is counted, not shown).
MAX_FIGURES = 4
_PLOTTED = {"steps", "values", "series", "baseline", "scale", "best", "noise_scale", "layer"}


def evidence_html(evidence: Mapping[str, Any] | None) -> str:
    """The evidence cell: plot (when there is a series) above a one-line summary."""
    if not evidence:
        return ""
    return (sparkline_svg(evidence.get("steps"), evidence.get("values"),
                          evidence.get("baseline"))
            + f"<div style='white-space:normal'>{html.escape(summary(evidence))}</div>")


def summary(evidence: Mapping[str, Any]) -> str:
    """``log grad_norm: 12 points, steps 40-95, last 3.2 (baseline 1.1 +- 0.2); drift 5``."""
    values = [v for v in evidence.get("values") or [] if _finite(v)]
    steps = evidence.get("steps") or []
    parts = []
    if values and steps:
        parts.append(f"{len(values)} points, steps {steps[0]}-{steps[-1]}, last "
                     f"{_num(values[-1])}")
    if _finite(evidence.get("baseline")):
        parts.append(f"baseline {_num(evidence['baseline'])} +- {_num(evidence.get('scale'))}")
    if _finite(evidence.get("best")):
        parts.append(f"best {_num(evidence['best'])} (noise {_num(evidence.get('noise_scale'))})")
    extras = [(k, v) for k, v in evidence.items() if k not in _PLOTTED and v is not None]
    parts += [f"{k.replace('_', ' ')} {_short(v)}" for k, v in extras[:MAX_FIGURES]]
    if len(extras) > MAX_FIGURES:
        parts.append(f"{len(extras) - MAX_FIGURES} more figures")
    head = str(evidence.get("series") or "evidence")
    return f"{head}: " + "; ".join(parts) if parts else head


def sparkline_svg(steps: Any, values: Any, baseline: Any = None) -> str:
    """An inline SVG line of ``values`` over ``steps`` (baseline dashed); "" without data."""
    points = [(float(s), float(v)) for s, v in zip(steps or [], values or [])
              if _finite(s) and _finite(v)]
    if len(points) < 2:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    levels = ys + ([float(baseline)] if _finite(baseline) else [])
    x0, x1, y0, y1 = min(xs), max(xs), min(levels), max(levels)

    def at(x: float, y: float) -> str:
        px = 2 + (SPARK_W - 4) * (x - x0) / ((x1 - x0) or 1)
        py = SPARK_H - 2 - (SPARK_H - 4) * (y - y0) / ((y1 - y0) or 1)
        return f"{px:.1f},{py:.1f}"

    line = " ".join(at(x, y) for x, y in points)
    base = ""
    if _finite(baseline):
        left, right = at(x0, float(baseline)), at(x1, float(baseline))
        base = (f"<polyline points='{left} {right}' stroke='#999' stroke-dasharray='3,2' "
                "fill='none'/>")
    return (f"<svg class='sc-evidence-plot' width='{SPARK_W}' height='{SPARK_H}'>{base}"
            f"<polyline points='{line}' stroke='#c92a2a' stroke-width='1.5' fill='none'/>"
            "</svg>")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def _num(value: Any) -> str:
    return f"{value:.4g}" if _finite(value) else "?"


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_short(v) for v in value[:3])}{', ...' if len(value) > 3 else ''}]"
    return _num(value) if _finite(value) else str(value)[:40]
