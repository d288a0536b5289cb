"""A plot's place on the page, filled once the plot has data.

BokehJS computes a plot's automatic ranges (``DataRange1d``) when it builds the plot's view,
and builds a view for every plot of the document, hidden ones included: a plot without data
there logs "could not set initial ranges" (or, on a log axis, "could not determine minimum
data value"). So a plot enters the document only at its first ``visible = True``, which every
view sets after the plot's first data (see :mod:`sentrycam.frontend`); from then on it stays,
and hiding it again only hides it. (Plots whose ranges are all explicit, the heatmaps, need
none of this.)
"""

from __future__ import annotations

from typing import Any

import panel as pn


def plot_pane(fig: Any, **options: Any) -> pn.pane.Bokeh:
    """A Panel pane that shows the Bokeh figure ``fig`` from its first ``visible = True`` on
    (at once when it is visible already); ``options`` go to the pane."""
    options.setdefault("sizing_mode", fig.sizing_mode)
    pane = pn.pane.Bokeh(fig if fig.visible else None, **options)

    def shown(attr: str, old: bool, new: bool) -> None:
        if new and pane.object is None:
            pane.object = fig

    fig.on_change("visible", shown)
    return pane
