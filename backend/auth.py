"""Bearer-token check in front of every route except the health check.

When the server has a token, each HTTP request and websocket handshake must carry it, either as
``Authorization: Bearer <token>`` or as ``?token=<token>`` (for browsers and websocket clients
that cannot set headers). It is an ASGI middleware rather than a per-route dependency so that
routes added later (the dashboard, its websockets) are covered without remembering to opt in.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import parse_qs

log = logging.getLogger(__name__)

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
                   Awaitable[None]]

#: Paths anyone may read: liveness probes and load balancers cannot send tokens.
OPEN_PATHS = frozenset({"/health"})

UNAUTHORIZED = ("this sentrycam server requires a token: send 'Authorization: Bearer <token>' "
                "or add ?token=<token> to the URL (the token is the server's --token / "
                "SENTRYCAM_TOKEN)")
WRONG_TOKEN = "the token sent does not match this sentrycam server's --token / SENTRYCAM_TOKEN"


def presented_token(headers: Iterable[tuple[bytes, bytes]], query_string: bytes) -> str | None:
    """The token a request carries (header first, then query), or None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    values = parse_qs(query_string.decode("latin-1")).get("token")
    return values[-1] if values else None


def token_matches(expected: str, presented: str | None) -> bool:
    # compare_digest: the time taken must not reveal how much of the token was right.
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())


class TokenGuard:
    """ASGI middleware: 401 for HTTP and websocket handshakes without the right token."""

    def __init__(self, app: ASGIApp, token: str, open_paths: Iterable[str] = OPEN_PATHS,
                 open_prefixes: Iterable[str] = ()) -> None:
        if not token:
            raise ValueError("TokenGuard needs a non-empty token")
        self.app = app
        self._token = token
        self._open_paths = frozenset(open_paths)
        self._open_prefixes = tuple(open_prefixes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path") or ""
        if (scope["type"] not in ("http", "websocket") or path in self._open_paths
                or path.startswith(self._open_prefixes)):
            await self.app(scope, receive, send)
            return
        presented = presented_token(scope.get("headers", []), scope.get("query_string", b""))
        if token_matches(self._token, presented):
            await self.app(scope, receive, send)
            return
        detail = UNAUTHORIZED if presented is None else WRONG_TOKEN
        log.info("refused %s %s: %s", scope["type"], scope.get("path"),
                 "no token" if presented is None else "wrong token")
        if scope["type"] == "http":
            await _send_http_401(send, detail)
        else:
            await _refuse_websocket(scope, send, detail)


def _body_and_headers(detail: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"www-authenticate", b'Bearer realm="sentrycam"')]
    return body, headers


async def _send_http_401(send: Any, detail: str) -> None:
    body, headers = _body_and_headers(detail)
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse_websocket(scope: dict, send: Any, detail: str) -> None:
    """Answer the handshake with a real 401 where the server supports it, else close (403)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body, headers = _body_and_headers(detail)
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
