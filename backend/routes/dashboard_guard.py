"""What the dashboard's Panel/Bokeh routes let through from a request.

Routes that Panel's FastAPI integration adds take their input straight from the request:

- ``GET /components/{module}/{component}/{attribute}/{file}`` serves a file listed on a
  component class. Panel's own handler imports ``module`` first, so a request could import any
  installed module (and run its import-time code), and its errors came out as 500s.
  :func:`component_resource` serves only modules of :data:`RESOURCE_PACKAGES` that are already
  imported, and never imports one; every refusal is a 4xx naming the problem.
- ``/`` (the page) and ``/ws`` (its Bokeh websocket) raised on a session id or token that
  this server did not sign or that is malformed (500, traceback in the log).
  :func:`guard_bokeh_sessions` refuses those requests first, naming the problem (a 4xx for
  the page, a close frame for the websocket). The page also sees only the cookies Panel can
  read (:func:`readable_cookies`).
- Each page request without a session id makes a session, which starts reading the API and
  subscribing to a run at once; Bokeh discards one that no browser connects to only 15-30 s
  later. Page loads that never connect (scripts, scanners) piled up that work until the server
  stalled; :class:`LoadingSessions` bounds how many may wait for their browser (429 beyond).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import zlib
from http.cookies import CookieError, SimpleCookie
from typing import Any, Callable

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import QueryParams
from starlette.requests import cookie_parser

log = logging.getLogger(__name__)

#: Where Panel serves component resources, and where Bokeh serves the page and its websocket.
COMPONENT_ROUTE = "/components/{path:path}"
PAGE_ROUTE, BOKEH_WS_ROUTE = "/", "/ws"
#: The page's query parameter that names an existing session.
SESSION_ID_PARAM = "bokeh_session_id"
#: Top-level packages whose (already imported) modules may serve component resources: the
#: dashboard's widgets all come from Panel and Bokeh.
RESOURCE_PACKAGES = frozenset({"panel", "bokeh"})
#: What Panel's resolver raises when the path names an attribute that is not a list of files
#: (a module, a property descriptor, None...).
RESOLVE_ERRORS = (TypeError, AttributeError, ValueError, OSError)
#: What a websocket client offers in ``Sec-WebSocket-Protocol``: ``bokeh, <session token>``.
BOKEH_SUBPROTOCOL = "bokeh"
#: The close code of a refused session, and how long its reason may be (a close frame's
#: payload is at most 125 bytes, two of them the code).
POLICY_VIOLATION, MAX_CLOSE_REASON = 1008, 123
#: Bokeh's handler closes a session with codes of its own that the websocket protocol forbids
#: (only 1000-4999 may travel: sending one fails with a traceback and no close frame); they go
#: out as the standard codes of the same meaning (internal error, protocol error).
BOKEH_CLOSE_CODES = {10000: 1011, 10001: 1002}
#: What decoding a malformed session token can raise (base64, JSON, zlib, wrong types).
TOKEN_ERRORS = (ValueError, TypeError, KeyError, AttributeError, zlib.error)
#: Why a request is refused: (HTTP status, reason).
Problem = tuple[int, str]
#: Dashboard sessions that may wait for their browser to connect, at most.
MAX_LOADING_SESSIONS = 8
TOO_MANY_LOADING = ("{n} dashboard pages are still loading (their browsers have not connected "
                    "yet); retry in a few seconds")


class LoadingSessions:
    """The dashboard sessions made whose browser has not connected yet (thread-safe)."""

    def __init__(self, most: int = MAX_LOADING_SESSIONS) -> None:
        self.most = most
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def add(self, session_id: str) -> None:
        with self._lock:
            self._ids.add(session_id)

    def discard(self, session_id: str) -> None:
        """The session's browser connected, or the session ended."""
        with self._lock:
            self._ids.discard(session_id)

    def problem(self) -> Problem | None:
        """A 429 while :attr:`most` sessions wait for their browser; None otherwise."""
        with self._lock:
            waiting = len(self._ids)
        return (429, TOO_MANY_LOADING.format(n=waiting)) if waiting >= self.most else None


def component_resource(path: str) -> FileResponse:
    """The file ``path`` (``module/component/attribute/file``) names, if that component lists
    it. Raises HTTPException 404 for a module outside RESOURCE_PACKAGES or not imported yet (it
    is not imported), and Panel's 4xx (malformed path, unlisted file...) with its reason."""
    from panel.io.server import ComponentResourceHandler
    from tornado.web import HTTPError

    module_name = path.split("/", 1)[0]
    if module_name.split(".")[0] not in RESOURCE_PACKAGES or module_name not in sys.modules:
        raise HTTPException(status_code=404, detail=f"no component resources of module "
                            f"{module_name[:80]!r}; this server serves those of the "
                            f"dashboard's own components only")
    try:
        # parse_url_path only reads class attributes: Panel calls it on the class too.
        resolved = ComponentResourceHandler.parse_url_path(ComponentResourceHandler, path)
    except HTTPError as exc:
        raise HTTPException(status_code=exc.status_code,
                            detail=exc.log_message or exc.reason or "bad component path") from None
    except RESOLVE_ERRORS:  # the named attribute exists but is no list of files
        raise HTTPException(status_code=404, detail=f"{path[:120]!r} names no component "
                            "resource") from None
    if not os.path.isfile(resolved):
        raise HTTPException(status_code=404, detail=f"component resource {path[:120]!r} is "
                            "listed but not installed")
    return FileResponse(resolved)


def serve_components_safely(app: FastAPI) -> None:
    """Replace Panel's ``/components/...`` route of ``app`` by :func:`component_resource`."""
    replace_get_route(app, COMPONENT_ROUTE, component_resource, response_class=FileResponse,
                      include_in_schema=False)


def replace_get_route(app: FastAPI, path: str, endpoint: Callable, **declaration: Any) -> None:
    """Replace the HTTP route of ``app`` at ``path`` by a GET route to ``endpoint`` declared
    with ``declaration`` (keywords of ``add_api_route``: response class, responses...)."""
    app.router.routes[:] = [route for route in app.router.routes
                            if not (getattr(route, "path", None) == path
                                    and hasattr(route, "methods"))]
    app.add_api_route(path, endpoint, methods=["GET"], **declaration)


def token_problem(subprotocols: list[str], secret_key: bytes) -> Problem | None:
    """Why a Bokeh websocket handshake offering ``subprotocols`` cannot open a session; None
    when its session token is well-formed, signed with ``secret_key`` and not expired."""
    from bokeh.util.token import check_token_signature, get_token_payload

    if len(subprotocols) != 2 or subprotocols[0] != BOKEH_SUBPROTOCOL:
        return 400, ("the dashboard websocket needs the subprotocols 'bokeh, <session token>' "
                     "that the dashboard page sends; load the page instead")
    token = subprotocols[1]
    try:
        if not check_token_signature(token, secret_key=secret_key, signed=True):
            return 403, "the session token was not issued by this server; reload the page"
        expiry = get_token_payload(token).get("session_expiry")
    except TOKEN_ERRORS:
        return 400, "the session token is malformed; reload the page"
    if not isinstance(expiry, (int, float)) or expiry <= time.time():
        return 403, "the session token has expired; reload the page"
    return None


def session_id_problem(session_ids: list[str], secret_key: bytes) -> Problem | None:
    """Why a page request naming ``session_ids`` (its ``bokeh_session_id`` values) cannot be
    served; None when there are none or each is signed with ``secret_key``."""
    from bokeh.util.token import check_session_id_signature

    try:
        if all(check_session_id_signature(s, secret_key=secret_key, signed=True)
               for s in session_ids):
            return None
    except TOKEN_ERRORS:
        pass
    return 403, (f"{SESSION_ID_PARAM} is not a session of this server; load the page without "
                 "it to start a new session")


def guard_bokeh_sessions(app: FastAPI, secret_key: bytes, loading: LoadingSessions) -> None:
    """Make the page (``/``) and its websocket (``/ws``) of ``app`` refuse a session id or
    token that :func:`session_id_problem` / :func:`token_problem` find fault with, and a new
    session while ``loading`` is full, before Bokeh's handlers see it."""
    def page_problem(scope: dict) -> Problem | None:
        ids = QueryParams(scope.get("query_string", b"")).getlist(SESSION_ID_PARAM)
        return session_id_problem(ids, secret_key) if ids else loading.problem()

    checks: dict[str, Callable[[dict], Problem | None]] = {
        PAGE_ROUTE: page_problem,
        BOKEH_WS_ROUTE: lambda scope: token_problem(list(scope.get("subprotocols") or []),
                                                    secret_key),
    }
    for route in app.router.routes:
        path = getattr(route, "path", None)
        if path == PAGE_ROUTE:
            route.app = _with_readable_cookies(route.app)
        if path in checks:
            route.app = _refusing(route.app, checks[path])


def readable_cookies(header: str) -> str:
    """The ``Cookie`` header ``header`` without the cookies Python's ``http.cookies`` cannot
    hold (an empty or illegal name, a reserved one such as ``path``). Panel copies the page
    request's cookies into a ``SimpleCookie``, which raises on those: a browser carrying one for
    this host (cookies ignore the port, so any local app may have set it) got a 500."""
    kept = []
    for name, value in cookie_parser(header).items():
        try:
            SimpleCookie()[name] = value
        except CookieError:
            continue
        kept.append(f"{name}={value}")
    return "; ".join(kept)


def _with_readable_cookies(inner: Callable) -> Callable:
    """An ASGI app that passes requests to ``inner`` with :func:`readable_cookies` only."""
    async def app(scope: dict, receive: Any, send: Any) -> None:
        headers = [(name, value) for name, value in scope.get("headers", [])
                   if name.lower() != b"cookie"]
        cookies = "; ".join(value.decode("latin-1") for name, value in scope.get("headers", [])
                            if name.lower() == b"cookie")
        if cookies:
            headers.append((b"cookie", readable_cookies(cookies).encode("latin-1")))
        await inner({**scope, "headers": headers}, receive, send)
    return app


def _refusing(inner: Callable, check: Callable[[dict], Problem | None]) -> Callable:
    """An ASGI app that passes a request to ``inner`` unless ``check`` finds a problem with
    it. It answers an HTTP request with a problem by its 4xx and JSON ``{"detail": reason}``,
    a websocket by a close frame (1008, policy violation) carrying the reason."""
    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        problem = check(scope)
        if problem is None:
            await inner(scope, receive, send if scope["type"] == "http" else _valid_close(send))
            return
        status, reason = problem
        log.info("refused %s %s: %s", scope["type"], scope.get("path"), reason)
        if scope["type"] == "http":
            await JSONResponse({"detail": reason}, status_code=status)(scope, receive, send)
        else:
            await _close_with_reason(scope, receive, send, reason)
    return guarded


def _valid_close(send: Any) -> Any:
    """``send``, with Bokeh's own close codes replaced by their standard counterparts."""
    async def sending(message: dict) -> None:
        code = message.get("code") if message["type"] == "websocket.close" else None
        if code in BOKEH_CLOSE_CODES:
            message = {**message, "code": BOKEH_CLOSE_CODES[code]}
        await send(message)
    return sending


async def _close_with_reason(scope: dict, receive: Any, send: Any, reason: str) -> None:
    """Accept the handshake, then close at once with ``reason``. A browser shows a close
    frame's reason but never a refused handshake's body, and uvicorn's default websocket
    implementation logs an error for every handshake refused with a body."""
    await receive()  # websocket.connect
    offered = scope.get("subprotocols") or []
    # A browser that offered subprotocols drops a connection that does not pick one.
    subprotocol = BOKEH_SUBPROTOCOL if BOKEH_SUBPROTOCOL in offered else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    await send({"type": "websocket.close", "code": POLICY_VIOLATION,
                "reason": reason[:MAX_CLOSE_REASON]})
