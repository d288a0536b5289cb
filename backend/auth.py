"""Bearer tokens with two scopes in front of every route except the health check.

When the server has a token, each HTTP request and websocket handshake must carry one, either
as ``Authorization: Bearer <token>`` or as ``?token=<token>`` (for browsers and websocket
clients that cannot set headers). The write token (trainers, admins) opens every route; the
read token (viewers) opens what only reads: GET/HEAD requests (the REST reads, the dashboard
page) and websockets other than ``/ws/ingest`` (the push subscriptions). It is an ASGI
middleware rather than a per-route dependency so that routes added later (the dashboard, its
websockets) are covered without remembering to opt in.

A credential is used up at this boundary: the application behind the guard sees neither the
``Authorization`` header nor the ``token`` query parameter (so nothing downstream can log it,
embed it in a page or a Bokeh session token), only the scope granted, in the
:data:`ACCESS_HEADER` header (one a client sends itself is dropped).
"""

from __future__ import annotations

import enum
import hmac
import json
import logging
from typing import Any, Awaitable, Callable, Iterable, Mapping
from urllib.parse import parse_qsl, unquote_plus

log = logging.getLogger(__name__)

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
                   Awaitable[None]]

#: Paths anyone may read: liveness probes and load balancers cannot send tokens.
OPEN_PATHS = frozenset({"/health"})
#: The one websocket that writes; every other websocket only reads.
WRITE_WEBSOCKETS = frozenset({"/ws/ingest"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Request header through which the guard tells the application which scope it granted.
ACCESS_HEADER = "x-sentrycam-access"
_ACCESS_HEADER_BYTES = ACCESS_HEADER.encode()

UNAUTHORIZED = ("this sentrycam server requires a token: send 'Authorization: Bearer <token>' "
                "or add ?token=<token> to the URL (the server's SENTRYCAM_TOKEN for writers, "
                "SENTRYCAM_READ_TOKEN for viewers)")
WRONG_TOKEN = ("the token sent does not match this sentrycam server's write token "
               "(SENTRYCAM_TOKEN) or its read token (SENTRYCAM_READ_TOKEN)")
READ_ONLY = ("the read token only reads (GET requests, the dashboard, /ws/runs/...); "
             "{what} needs the write token scope (SENTRYCAM_TOKEN)")


class Access(str, enum.Enum):
    """What a token lets its holder do."""

    READ = "read"
    WRITE = "write"


def required_access(scope: Mapping[str, Any]) -> Access:
    """The scope an HTTP request or websocket handshake needs."""
    if scope["type"] == "websocket":
        return Access.WRITE if scope.get("path") in WRITE_WEBSOCKETS else Access.READ
    return Access.READ if scope.get("method", "GET") in READ_METHODS else Access.WRITE


def refusals(method: str, read_token: bool) -> dict[int, str]:
    """What :class:`TokenGuard` may answer an HTTP ``method`` request with, and why (the OpenAPI
    document lists these for every operation but the open paths); ``read_token``: whether the
    server has one."""
    answers = {401: "the server has a token and none, or a wrong one, was sent"}
    if read_token and required_access({"type": "http", "method": method}) == Access.WRITE:
        answers[403] = "the read token was sent: this needs the write token"
    return answers


def presented_token(headers: Iterable[tuple[bytes, bytes]], query_string: bytes) -> str | None:
    """The token a request carries (header first, then query), or None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    values = [value for name, value in parse_qsl(query_string.decode("latin-1"))
              if name == "token"]
    return values[-1] if values else None


def token_matches(expected: str, presented: str | None) -> bool:
    # compare_digest: the time taken must not reveal how much of the token was right.
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())


def granted_access(headers: Mapping[str, Any]) -> Access | None:
    """The scope the guard granted the request with these headers (any capitalisation of the
    names, as Bokeh passes them on); None where no guard ran."""
    value = next((value for name, value in headers.items() if name.lower() == ACCESS_HEADER),
                 None)
    return Access(value) if value in (Access.READ.value, Access.WRITE.value) else None


class TokenGuard:
    """ASGI middleware: 401 without a known token, 403 for the read token on a write route."""

    def __init__(self, app: ASGIApp, token: str, read_token: str | None = None,
                 open_paths: Iterable[str] = OPEN_PATHS, open_prefixes: Iterable[str] = ()) -> None:
        if not token:
            raise ValueError("TokenGuard needs a non-empty write token")
        self.app = app
        self._tokens = {Access.WRITE: token}
        if read_token:
            self._tokens[Access.READ] = read_token
        self._open_paths = frozenset(open_paths)
        self._open_prefixes = tuple(open_prefixes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path") or ""
        presented = presented_token(scope.get("headers", []), scope.get("query_string", b""))
        if path in self._open_paths or path.startswith(self._open_prefixes):
            await self.app(_without_credentials(scope, None), receive, send)
            return
        access = self._grant(presented)
        needed = required_access(scope)
        if access is None:
            log.info("refused %s %s: %s", scope["type"], path,
                     "no token" if presented is None else "wrong token")
            await refuse(scope, send, 401, UNAUTHORIZED if presented is None else WRONG_TOKEN,
                         [(b"www-authenticate", b'Bearer realm="sentrycam"')])
        elif access == Access.READ and needed == Access.WRITE:
            what = f"{scope.get('method', 'websocket')} {path}"
            log.info("refused %s with the read token: it needs the write token", what)
            await refuse(scope, send, 403, READ_ONLY.format(what=what))
        else:
            await self.app(_without_credentials(scope, access), receive, send)

    def _grant(self, presented: str | None) -> Access | None:
        """The scope of the token presented. Every token is compared, so the time taken does
        not tell which one (nor how much of it) matched."""
        matches = [access for access, token in self._tokens.items()
                   if token_matches(token, presented)]
        return Access.WRITE if Access.WRITE in matches else (matches[0] if matches else None)


def _without_credentials(scope: dict, access: Access | None) -> dict:
    """A copy of ``scope`` without the token (header and query) and with the scope granted."""
    headers = [(name, value) for name, value in scope.get("headers", [])
               if name.lower() not in (b"authorization", _ACCESS_HEADER_BYTES)]
    if access is not None:
        headers.append((_ACCESS_HEADER_BYTES, access.value.encode()))
    kept = [part for part in scope.get("query_string", b"").split(b"&")
            if unquote_plus(part.partition(b"=")[0].decode("latin-1")) != "token"]
    return {**scope, "headers": headers, "query_string": b"&".join(kept)}


async def refuse(scope: dict, send: Any, status: int, detail: str,
                 headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer an HTTP request, or a websocket handshake, with ``status`` and a JSON
    ``{"detail": ...}``. A websocket gets a real HTTP answer where the server supports it
    (uvicorn does), else the handshake is closed (1008, policy violation)."""
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()), *headers]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": head})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
