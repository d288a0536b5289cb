"""``GET /``: the live dashboard (Panel + Bokeh), served by this same uvicorn process.

:func:`mount_dashboard` adds the Panel application at the root URL with ``bokeh-fastapi``:
the page, BokehJS's static files (``/static``) and the page's own websocket (``/ws``) all come
from the server. Each browser session reads through the server's HTTP API and push websocket
(:mod:`sentrycam.frontend.page`), like any other client. What the Panel/Bokeh routes take from a
request is checked first (:mod:`sentrycam.backend.routes.dashboard_guard`).
"""

from __future__ import annotations

import secrets

from fastapi import FastAPI

from sentrycam.backend.routes.dashboard_guard import guard_bokeh_sessions, serve_components_safely
from sentrycam.backend.settings import ServerSettings, is_loopback

#: Origins whose pages may open the dashboard's websocket on a loopback server.
LOOPBACK_ORIGINS = ("localhost:*", "127.0.0.1:*", "[::1]:*")
#: What a browser fetches without the page's ``?token=`` and the token guard lets through:
#: BokehJS/Panel bundles (public files), and the page's own websocket, which Bokeh admits only
#: with a session token signed by this server when it served the (token-guarded) page.
OPEN_PATHS = frozenset({"/ws"})
OPEN_PREFIXES = ("/static/",)


def mount_dashboard(app: FastAPI, settings: ServerSettings) -> None:
    """Serve the dashboard at ``/`` of ``app``. On a loopback server only pages from this
    machine may connect; a server bound elsewhere requires its token anyway."""
    from panel.io.fastapi import add_applications

    from sentrycam.frontend.page import session_page

    origins = list(LOOPBACK_ORIGINS) if is_loopback(settings.host) else ["*"]
    # Signed sessions: a websocket must present a session token this server minted, and a
    # fresh secret per server means no token outlives it.
    secret_key = secrets.token_bytes(32)
    add_applications({"/": session_page}, app=app, title="sentrycam", websocket_origin=origins,
                     secret_key=secret_key, sign_sessions=True)
    serve_components_safely(app)
    guard_bokeh_sessions(app, secret_key)
