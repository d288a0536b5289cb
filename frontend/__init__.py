"""sentrycam.frontend: the live dashboard (Panel + Bokeh), in a browser or inline in Jupyter.

``sentrycam serve`` serves :func:`~sentrycam.frontend.page.session_page` at its root URL. In a
notebook, :func:`show` displays the same panels inline and keeps them live::

    from sentrycam import frontend
    frontend.show(url="http://127.0.0.1:8765", run_id=run.run_id)

Everything is read through :class:`~sentrycam.frontend.client.ApiClient` (REST + the push
websocket), never from the store. Panel is imported on first use, so ``import
sentrycam.frontend`` stays light.

Every plot stays hidden (Bokeh ``visible=False``) until it has data, and enters the page only
then (:mod:`~sentrycam.frontend.plot_pane`): BokehJS cannot compute the automatic range of an
empty plot and logs "could not set initial ranges" (or a log axis warning) when it builds or
repaints one, about 185 times per page load before this rule. Each view shows a line of text
saying what it waits for instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["show", "dashboard"]


def dashboard(url: str, run_id: str | None = None, *, token: str | None = None,
              compare: str | None = None, webgl: bool = True) -> Any:
    """The dashboard's Panel object for the server at ``url``: one run's panels when
    ``run_id`` is given (the embedding view, heatmaps, curves, alerts), else the whole page
    with its run picker. Updates start at once and keep coming while it is displayed.
    ``webgl=False`` draws the 2D maps on a plain canvas (faster without a GPU)."""
    import panel as pn

    from sentrycam.frontend.client import ApiClient
    from sentrycam.frontend.page import DashboardPage
    from sentrycam.frontend.run_view import RunDashboard

    pn.extension("tabulator")
    client = ApiClient(url, token=token)
    if run_id is not None and compare is None:
        return RunDashboard(client, run_id, webgl=webgl).start().panel()
    return DashboardPage(client, run_id=run_id, compare=compare, webgl=webgl).start().panel()


def show(url: str, run_id: str | None = None, *, token: str | None = None,
         compare: str | None = None, webgl: bool = True) -> Any:
    """Display the dashboard inline in Jupyter (see :func:`dashboard`) and return it."""
    from IPython.display import display

    panel = dashboard(url, run_id, token=token, compare=compare, webgl=webgl)
    display(panel)
    return panel
