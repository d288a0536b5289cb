"""``GET /``: the live dashboard (Panel + Bokeh), served by this same uvicorn process.

:func:`mount_dashboard` adds the Panel application at the root URL with ``bokeh-fastapi``:
the page, BokehJS's static files (``/static``) and the page's own websocket (``/ws``) all come
from the server. Each browser session reads through the server's HTTP API and push websocket
(:mod:`sentrycam.frontend.page`), like any other client: at the server's own address
(``settings.url``), never at the host the browser's request named, and with the server's
token of the scope the viewer was granted (the viewer's own token never reaches the session,
see :mod:`sentrycam.backend.auth`). What the Panel/Bokeh routes take from a request is checked
first (:mod:`sentrycam.backend.routes.dashboard_guard`).
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from sentrycam.backend.auth import Access, granted_access
from sentrycam.backend.routes.dashboard_guard import (PAGE_ROUTE, TOO_MANY_LOADING,
                                                      LoadingSessions, guard_bokeh_sessions,
                                                      replace_get_route, serve_components_safely)
from sentrycam.backend.routes.errors import problem
from sentrycam.backend.settings import ServerSettings

#: What a browser fetches without the page's ``?token=`` and the token guard lets through:
#: BokehJS/Panel bundles (public files), and the page's own websocket, which Bokeh admits only
#: with a session token signed by this server when it served the (token-guarded) page.
OPEN_PATHS = frozenset({"/ws"})
OPEN_PREFIXES = ("/static/",)
#: Why the page refuses a request (see guard_bokeh_sessions).
SESSION_REFUSED = "bokeh_session_id names no session this server signed"


def mount_dashboard(app: FastAPI, settings: ServerSettings) -> None:
    """Serve the dashboard at ``/`` of ``app``."""
    import panel as pn
    from panel.io.fastapi import add_applications

    from sentrycam.frontend.page import session_page

    tokens = {Access.WRITE: settings.token, Access.READ: settings.read_token}
    loading = LoadingSessions()

    def page() -> Any:
        context = pn.state.curdoc.session_context
        loading.add(context.id)
        pn.state.onload(lambda: loading.discard(context.id))  # its browser connected
        pn.state.on_session_destroyed(lambda _: loading.discard(context.id))
        access = granted_access(context.request.headers)
        return session_page(settings.url, token=tokens.get(access))

    # Signed sessions: a websocket must present a session token this server minted, and a
    # fresh secret per server means no token outlives it. Which pages may open that websocket
    # is the HostOriginGuard's to decide (sentrycam.backend.origin), for every route alike.
    secret_key = secrets.token_bytes(32)
    add_applications({"/": page}, app=app, title="sentrycam", websocket_origin=["*"],
                     secret_key=secret_key, sign_sessions=True)
    serve_components_safely(app)
    _declare_page(app)
    guard_bokeh_sessions(app, secret_key, loading)


def _declare_page(app: FastAPI) -> None:
    """Declare what Bokeh's page route answers: HTML, or 403 for a session id this server
    did not sign (:mod:`sentrycam.backend.routes.dashboard_guard`)."""
    page = next(route for route in app.router.routes
                if getattr(route, "path", None) == PAGE_ROUTE and hasattr(route, "methods"))
    replace_get_route(app, PAGE_ROUTE, page.endpoint, response_class=HTMLResponse,
                      responses={**problem(403, SESSION_REFUSED),
                                 **problem(429, TOO_MANY_LOADING.format(n="too many"))},
                      summary="The live dashboard (an HTML page)")
