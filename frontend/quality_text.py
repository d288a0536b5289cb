"""The projection quality line under the 2D map, each number explained on hover.

Metric names come from the projector worker (:mod:`sentrycam.projector.quality` spells them,
e.g. ``trust@15``, ``nn@15``, ``temporal_ranking``, ``temporal_nn@5``) and the server
(``update_s``, ``sample_fraction``); the explanation is looked up by the part before ``@``.
"""

from __future__ import annotations

import html
from typing import Any, Mapping

#: What each quality number means and which direction is good, by name (before any ``@k``).
EXPLANATIONS = {
    "nn": ("neighbour preservation: the share of each sample's k nearest neighbours in the "
           "layer's features that are also its neighbours on the map (0-1, higher is better)"),
    "trust": ("trustworthiness: how rarely the map puts samples next to each other that are "
              "far apart in the features (0-1, higher is better; above 0.9 is good)"),
    "temporal_ranking": ("temporal ranking: per sample, the rank correlation between how far its "
                         "features and how far its map position are, at each recent snapshot, "
                         "from the latest one (-1 to 1, higher is better; near 0 or below: "
                         "motion on the map does not follow motion in the features)"),
    "temporal_nn": ("temporal neighbour preservation: per sample, the share of its k nearest "
                    "snapshots in the features that are also nearest on the map (0-1, higher "
                    "is better)"),
    "update_s": "seconds the projector took to draw this map (lower is faster)",
    "sample_fraction": ("share of the probe samples the projector's update optimised for this "
                        "map (1 = all of them)"),
}


def explain(name: str) -> str:
    """The hover text of metric ``name`` (``trust@15`` -> trustworthiness at k=15 ...)."""
    base, _, k = name.partition("@")
    text = EXPLANATIONS.get(base, "a projection quality number of the projector worker")
    return f"{text}; k = {k}" if k else text


def quality_html(metrics: Mapping[str, Any]) -> str:
    """The quality line: one ``<span title=...>`` per metric (sorted by name), hover explains."""
    parts = [f"<span class='sc-quality-metric' title='{html.escape(explain(name), quote=True)}' "
             f"style='border-bottom:1px dotted #888;cursor:help'>{html.escape(name)} "
             f"<b>{_fmt(value)}</b></span>" for name, value in sorted(metrics.items())]
    return ("projection quality (hover a number for its meaning): "
            + " &middot; ".join(parts))


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.3f}"
    except (TypeError, ValueError):
        return str(value)
