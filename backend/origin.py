"""Host and Origin checks in front of every route: what a browser can be made to do.

A server on loopback is still reachable from any web page the user opens: the page can open
websockets to it, POST to it, and (by DNS rebinding: a name of the attacker's that resolves
to 127.0.0.1) read it. So, for every HTTP request and websocket handshake:

- a ``Host`` header (without its port) that is not one of the server's host names
  (:attr:`~sentrycam.backend.settings.ServerSettings.served_hosts`: loopback names, the bind
  address, ``--allowed-host``) is refused with 421 Misdirected Request;
- a websocket handshake or a state-changing request (POST, PUT, PATCH, DELETE) whose
  ``Origin`` is neither the server's own (``http://<served host>:<port it serves on>``) nor
  one of ``--allowed-origin`` is refused with 403. Requests without an ``Origin`` (trainers,
  curl, the dashboard's own server-side calls) are not from a browser page and pass.

It is the one place these rules live: the dashboard's Bokeh websocket relies on it too.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from sentrycam.backend.auth import ASGIApp, refuse
from sentrycam.backend.settings import Origin, host_name, parse_origin

log = logging.getLogger(__name__)

STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

MISDIRECTED = ("this sentrycam server does not answer to the host name {host!r}; "
               "add it with --allowed-host (SENTRYCAM_ALLOWED_HOSTS) if it is this server's")
FOREIGN_ORIGIN = ("a page from {origin!r} may not {what} on this sentrycam server; "
                  "add the origin with --allowed-origin (SENTRYCAM_ALLOWED_ORIGINS) if it "
                  "serves this server's pages (a reverse proxy)")


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def request_host(scope: dict) -> str | None:
    """The ``Host`` header's name without its port, as compared; None without a Host."""
    host = _header(scope, b"host")
    if not host:
        return None
    if host.startswith("["):  # [v6 address]:port
        return host_name(host.partition("]")[0])
    return host_name(host.rpartition(":")[0] if host.count(":") == 1 else host)


def checks_origin(scope: dict) -> bool:
    """Whether a browser's request like this one could act on the server: a websocket, or a
    request that changes state."""
    return scope["type"] == "websocket" or scope.get("method") in STATE_CHANGING_METHODS


def refusals(method: str) -> dict[int, str]:
    """What :class:`HostOriginGuard` may answer an HTTP ``method`` request with, and why (the
    OpenAPI document lists these for every operation)."""
    answers = {421: "the Host header names no host this server answers to (see --allowed-host)"}
    if method in STATE_CHANGING_METHODS:
        answers[403] = "sent by a browser page of a foreign origin (see --allowed-origin)"
    return answers


class HostOriginGuard:
    """ASGI middleware: 421 for a foreign ``Host``, 403 for a foreign ``Origin`` (see module)."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str],
                 origins: Iterable[Origin] = ()) -> None:
        self.app = app
        self._hosts = frozenset(hosts)
        self._origins = frozenset(origins)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = request_host(scope)
        if host not in self._hosts:
            log.info("refused %s %s for host %r", scope["type"], scope.get("path"), host)
            await refuse(scope, send, 421, MISDIRECTED.format(host=host))
            return
        origin = _header(scope, b"origin")
        if origin is not None and checks_origin(scope) and not self._allows(origin, scope):
            what = ("open a websocket" if scope["type"] == "websocket"
                    else f"send {scope.get('method')} requests")
            log.info("refused %s %s from origin %r", scope["type"], scope.get("path"), origin)
            await refuse(scope, send, 403, FOREIGN_ORIGIN.format(origin=origin, what=what))
            return
        await self.app(scope, receive, send)

    def _allows(self, origin: str, scope: dict) -> bool:
        """The server's own origins (http, a served host, the port this connection came in
        on) and the allowed ones; the opaque origin ``null`` (sandboxed pages, files) never."""
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        if parsed in self._origins:
            return True
        scheme, host, port = parsed
        server = scope.get("server") or (None, None)
        return scheme == "http" and host in self._hosts and port == server[1]
