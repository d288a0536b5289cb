"""The frontend's only way to the data: HTTP reads and the push websocket of a sentrycam server.

:class:`ApiClient` wraps the REST routes; :class:`PushSubscription` keeps a background thread
subscribed to ``/ws/runs/{run_id}`` and hands each decoded push frame
(:class:`~sentrycam.protocol.push.PushFrame`: typed header and arrays) to a callback (on that
thread: the callback must only queue it). Neither ever touches the store, even when the
dashboard runs inside the server process: the DuckDB file belongs to the server.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sentrycam.protocol.push import PushFrame, PushFrameError, decode
from sentrycam.protocol.redaction import redacting_logger

log = logging.getLogger(__name__)
#: The push websockets' own log (handshake headers at DEBUG level, the token redacted).
_WS_LOG = redacting_logger(f"{__name__}.websocket")

#: Seconds between reconnection attempts of a push subscription.
RECONNECT_S = 1.0
HTTP_TIMEOUT_S = 30.0


class ApiClient:
    """HTTP access to one server: ``url`` like ``http://127.0.0.1:8765``; ``token`` when the
    server requires one. Thread-safe (one httpx client, which is)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must look like http://HOST:PORT, got {url!r}")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.token = token
        # In a header, never in a URL: URLs end up in logs (the server's, proxies').
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=self._headers,
                                  timeout=HTTP_TIMEOUT_S)

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, **params: Any) -> Any:
        response = self._http.get(path, params={k: v for k, v in params.items()
                                                if v is not None})
        response.raise_for_status()
        return response

    def runs(self) -> list[dict[str, Any]]:
        """Every run (newest first), as the server summarises them."""
        return self._get("/api/runs").json()

    def run(self, run_id: str) -> dict[str, Any]:
        return self._get(f"/api/runs/{quote(run_id)}").json()

    def embedding(self, run_id: str, layer: str, step: int) -> PushFrame:
        """The ``embedding`` push frame of one stored 2D map (coordinates, outputs, cluster
        health). Raises PushFrameError when the server's answer is not one."""
        response = self._get(f"/api/runs/{quote(run_id)}/embedding", layer=layer, step=step,
                             format="frame")
        return decode(response.content)

    def trails(self, run_id: str, layer: str, sample_ids: list[int]) -> dict[str, np.ndarray]:
        """{sample_id, step, x, y} arrays [M] in (sample_id, step) order."""
        data = self._get(f"/api/runs/{quote(run_id)}/trails", layer=layer,
                         sample_ids=",".join(str(int(s)) for s in sample_ids)).json()
        return {key: np.asarray(data[key], dtype=np.float64 if key in "xy" else np.int64)
                for key in ("sample_id", "step", "x", "y")}

    def alerts(self, run_id: str) -> list[dict[str, Any]]:
        return self._get(f"/api/runs/{quote(run_id)}/alerts").json()

    def incidents(self, run_id: str) -> list[dict[str, Any]]:
        """The run's confirmed incidents, oldest first: alerts grouped into events, each with
        ``start_step``, ``end_step``, ``severity``, ``alert_ids``, ``diagnosis``,
        ``confidence``, ``runners_up`` and ``suggestion``."""
        return self._get(f"/api/runs/{quote(run_id)}/incidents").json()

    def acknowledge(self, alert_id: int) -> None:
        self._http.post(f"/api/alerts/{int(alert_id)}/acknowledge").raise_for_status()

    def health(self) -> dict[str, Any]:
        """The server's ``/health``: ``status`` "ok", or "failing" (answered 503) with the
        ``reason`` its store cannot be written (a full disk, say)."""
        response = self._http.get("/health")
        if response.status_code != 503:
            response.raise_for_status()
        return response.json()

    def projector_state(self) -> dict[str, Any] | None:
        """The server's projector worker state (``GET /api/projector``: state, queue_depth,
        behind_by_s, counts), or None when the server has no such route."""
        response = self._http.get("/api/projector")
        return response.json() if response.status_code == 200 else None

    def push_url(self, run_id: str) -> str:
        """The push websocket's URL (the token goes in a header, see :meth:`subscribe`)."""
        base = "wss" + self.url[5:] if self.url.startswith("https") else "ws" + self.url[4:]
        return f"{base}/ws/runs/{quote(run_id)}"

    def subscribe(self, run_id: str, on_frame: Callable[[PushFrame], None]) -> PushSubscription:
        """Start receiving ``run_id``'s push frames on a background thread."""
        return PushSubscription(self.push_url(run_id), on_frame, headers=self._headers).start()


class PushSubscription:
    """A thread that stays subscribed (reconnecting after a drop, each time receiving the
    catch-up again) and calls ``on_frame(frame)`` for every push frame. A message that is not
    a valid push frame is counted in ``rejected``, logged and skipped. ``headers`` go with
    each handshake (``Authorization``)."""

    def __init__(self, url: str, on_frame: Callable[[PushFrame], None],
                 headers: dict[str, str] | None = None) -> None:
        self.url = url
        self._headers = dict(headers or {})
        self._on_frame = on_frame
        self._stop = threading.Event()
        self._socket = None
        self._thread = threading.Thread(target=self._run, name="sentrycam-push-client",
                                        daemon=True)
        self.frames = 0
        self.bytes = 0
        self.rejected = 0
        self.connects = 0
        self.last_error: str | None = None

    def start(self) -> PushSubscription:
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        socket = self._socket
        if socket is not None:
            socket.close()
        self._thread.join(timeout)

    def resync(self) -> None:
        """Drop the connection; the thread reconnects and receives the catch-up again."""
        socket = self._socket
        if socket is not None:
            socket.close()

    @property
    def connected(self) -> bool:
        return self._socket is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with connect(self.url, max_size=None, open_timeout=10, logger=_WS_LOG,
                             additional_headers=self._headers) as socket:
                    self._socket = socket
                    self.connects += 1
                    for message in socket:
                        self._receive(message)
            except ConnectionClosed as exc:
                self.last_error = f"connection closed ({exc.rcvd.code if exc.rcvd else '-'})"
            except Exception as exc:  # keep trying: the server may be restarting
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.debug("push subscription %s: %s", self.url, exc)
            finally:
                self._socket = None
            self._stop.wait(RECONNECT_S)

    def _receive(self, message: bytes | str) -> None:
        if isinstance(message, str):
            return
        self.frames += 1
        self.bytes += len(message)
        try:
            frame = decode(message)
        except PushFrameError as exc:  # skip it: the next frames may still be good
            self.rejected += 1
            self.last_error = f"rejected frame: {exc}"
            log.warning("push subscription %s: %s", self.url, exc)
            return
        try:
            self._on_frame(frame)
        except Exception:
            log.exception("dashboard could not take a %s frame", frame.header.type)
