"""Settings of one sentrycam server process.

Every field can come from the environment with the ``SENTRYCAM_`` prefix
(``SENTRYCAM_DB_PATH``, ``SENTRYCAM_TOKEN``, ``SENTRYCAM_PORT`` ...) or be passed as a keyword.
Nothing is read at import time: build ``ServerSettings(...)`` where it is needed.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentrycam.protocol.server_info import info_file_path

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything: treat as public


class ServerSettings(BaseSettings):
    """What a server binds to, where it stores, and how it batches ingest.

    ``port`` 0 picks a free port; ``idle_timeout_s`` 0 never exits on idleness;
    ``info_file`` defaults to ``<db_path>.server.json``; ``retention_max_snapshots`` keeps at
    most that many snapshots' feature vectors per run (None keeps all). ``audit`` runs the
    audit engine; ``alert_webhook_url`` (opt-in, none by default) receives a POST for each alert
    that reaches ``alert_webhook_min_severity``. ``projector`` runs the
    resident projector worker (``SENTRYCAM_PROJECTOR=off`` disables it, e.g. in tests that do not
    need 2D maps: it compiles numba for ~25 s of CPU at start); ``projector_device`` "auto" uses
    CUDA when present; ``projector_drain_s`` bounds how long shutdown waits for queued
    projections; ``projector_max_layers`` projects the deepest that many layers of each snapshot
    (0: all); ``projector_backlog`` snapshots of a layer may wait before the oldest is skipped.
    """

    model_config = SettingsConfigDict(env_prefix="SENTRYCAM_", extra="forbid",
                                      validate_default=True)

    db_path: Path
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    token: str | None = Field(None, repr=False)  # never in logs or tracebacks
    idle_timeout_s: float = Field(0.0, ge=0.0)
    info_file: Path | None = None
    max_frame_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    ingest_queue: int = Field(10_000, ge=1)
    batch_max: int = Field(500, ge=1)
    batch_wait_s: float = Field(0.02, gt=0.0, le=10.0)
    retention_max_snapshots: int | None = Field(None, ge=1)
    projector: bool = True
    projector_device: str = "auto"
    projector_drain_s: float = Field(15.0, ge=0.0)
    projector_max_layers: int = Field(2, ge=0)
    projector_backlog: int = Field(12, ge=1)
    audit: bool = True
    alert_webhook_url: str | None = None
    alert_webhook_min_severity: int = Field(3, ge=1, le=3)

    @field_validator("host")
    @classmethod
    def _host_not_blank(cls, host: str) -> str:
        if not host.strip():
            raise ValueError("host must not be empty; use 127.0.0.1 for this machine only")
        return host.strip()

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_is_http(cls, url: str | None) -> str | None:
        if not url:
            return None
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"alert_webhook_url must be an http:// or https:// URL, got {url!r}")
        return url

    @field_validator("token")
    @classmethod
    def _blank_token_is_none(cls, token: str | None) -> str | None:
        # An empty SENTRYCAM_TOKEN= in a shell means "no token", not "the empty token".
        return token if token else None

    @model_validator(mode="after")
    def _check_exposure_and_fill_defaults(self) -> "ServerSettings":
        if not is_loopback(self.host) and self.token is None:
            raise ValueError(f"refusing to bind {self.host!r} without a token: set --token or "
                             "SENTRYCAM_TOKEN when binding a non-loopback address")
        if self.info_file is None:
            self.info_file = info_file_path(self.db_path)
        return self

    @property
    def token_required(self) -> bool:
        return self.token is not None
