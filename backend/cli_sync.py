"""``sentrycam sync``: send what trainers spooled to disk while no server answered.

Before replaying, the server is asked whether it will take the writes: a missing or wrong
token is named as such (the server answers 401 or 403), not reported as an unreachable server.
Nothing is sent, and nothing leaves the spool, until the server has accepted the token.
"""

from __future__ import annotations

import os
from pathlib import Path

from sentrycam.backend.cli_data import _get_json, server_detail
from sentrycam.backend.cli_errors import CLIError

#: Seconds to wait for the server's answer to the token check.
CHECK_TIMEOUT_S = 10.0


def sync_spool(spool: Path, url: str, token: str | None) -> int:
    """Replay every spooled run under ``spool`` to ``url``; returns the messages acknowledged.
    ``token``: the write token (default: env SENTRYCAM_TOKEN)."""
    from sentrycam.capture.sender import replay_spool
    from sentrycam.capture.spool import spooled_runs

    if not spool.is_dir():
        raise CLIError(f"no spool folder at {spool}")
    if not spooled_runs(spool):
        return 0  # nothing to send: no need for the server
    token = token or os.environ.get("SENTRYCAM_TOKEN") or None
    check_write_access(url, token)
    try:
        return replay_spool(spool, url, token=token)
    except ConnectionError as exc:
        raise CLIError(f"{exc}; run `sentrycam sync` again once the server answers") from None


def check_write_access(url: str, token: str | None) -> None:
    """CLIError unless the server at ``url`` answers and accepts ``token`` for ingest."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    from sentrycam.capture.sender import ingest_url

    try:
        ws_url = ingest_url(url)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    health = _get_json(url, "/health", None)  # the one route without a token: is it there?
    if health.get("token_required") and not token:
        raise CLIError(f"the server at {url} requires its write token and none was given: "
                       "pass --token or set SENTRYCAM_TOKEN (nothing was sent; the spool is "
                       "kept)")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        with connect(ws_url, additional_headers=headers, open_timeout=CHECK_TIMEOUT_S,
                     close_timeout=1.0):
            return
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise CLIError(f"the server at {url} refused the token ({status}): "
                       f"{server_detail(exc.response.body)} (nothing was sent; the spool is kept)"
                       ) from None
    except (OSError, TimeoutError) as exc:
        raise CLIError(f"cannot open the ingest websocket of {url}: {exc}") from None
