"""Settings of one sentrycam server process.

Every field can come from the environment with the ``SENTRYCAM_`` prefix
(``SENTRYCAM_DB_PATH``, ``SENTRYCAM_TOKEN``, ``SENTRYCAM_PORT`` ...) or be passed as a keyword.
List fields take a comma-separated value from the environment
(``SENTRYCAM_ALLOWED_HOSTS=team.example.com,10.0.0.5``).
Nothing is read at import time: build ``ServerSettings(...)`` where it is needed.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sentrycam.backend.projection_pacing import DEFAULT_MAX_WAIT_S
from sentrycam.protocol.chunks import CHUNK_TARGET_BYTES, KEEPALIVE_TIMEOUT_S
from sentrycam.protocol.server_info import info_file_path

if TYPE_CHECKING:
    from sentrycam.backend.projection_work import CpuShare
    from sentrycam.backend.store.retention import RetentionSettings

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
#: Host names every server answers to: a browser on this machine reaches it by these.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Bind addresses that listen on every interface (reached locally through loopback).
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
_DEFAULT_PORTS = {"http": 80, "https": 443}

#: An origin as compared: (scheme, host, port), all lower case, the port made explicit.
Origin = tuple[str, str, int]


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything: treat as public


def host_name(host: str) -> str:
    """``host`` as compared against allowed hosts: lower case, without IPv6 brackets."""
    return host.strip().strip("[]").lower()


def parse_origin(origin: str) -> Origin | None:
    """``scheme://host[:port]`` as an :data:`Origin`, or None when it is not one (a path,
    user info, a scheme other than http/https, or the browsers' opaque origin ``null``)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if (parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname
            or parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc):
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def server_url(host: str, port: int) -> str:
    """The URL local clients should use; a wildcard bind is reached through loopback."""
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _comma_separated(value: Any) -> Any:
    """A list from the environment's ``a,b,c``; a list or tuple passes unchanged."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _first_line(path: Path, what: str) -> str:
    """The token in a token file: its first line, stripped (a trailing newline is usual)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise ValueError(f"the {what} file {path} is empty; its first line must be the token")
    return token


class ServerSettings(BaseSettings):
    """What a server binds to, where it stores, and how it batches ingest.

    ``port`` 0 picks a free port; ``idle_timeout_s`` 0 never exits on idleness;
    ``info_file`` defaults to ``<db_path>.server.json``. Retention (on by default; see
    :mod:`sentrycam.backend.store.retention`): per run and layer the newest
    ``retention_max_snapshots`` snapshots keep their feature vectors, plus a thinned history of
    about ``retention_history`` older ones per doubling of age; 0 (or None) keeps every
    snapshot's vectors. Every other row (2D maps, predictions, scalars, alerts ...) is kept.

    ``token`` (write: trainers and admins, every route) and ``read_token`` (viewers: GET
    routes, the push websocket, the dashboard) come from the environment or from the first
    line of ``token_file`` / ``read_token_file``; a read token needs a write token beside it.
    ``allowed_hosts``: Host names served besides the loopback names and the bind address;
    ``allowed_origins`` (``https://team.example.com``): browser origins that may open
    websockets and change state besides the server's own (see
    :mod:`sentrycam.backend.origin`). ``audit`` runs the
    audit engine, ``audit_engine`` in a child process ("process", the default: its CPU time
    stays off the server's GIL and ingest) or on a thread of the server ("thread");
    ``alert_webhook_url`` (opt-in, none by default) receives a POST for each alert
    that reaches ``alert_webhook_min_severity``. ``projector`` runs the
    resident projector worker (``SENTRYCAM_PROJECTOR=off`` disables it, e.g. in tests that do not
    need 2D maps: it compiles numba for ~25 s of CPU at start); ``projector_device`` "auto" uses
    CUDA when present; ``projector_drain_s`` bounds how long shutdown waits for queued
    projections; ``projector_max_layers`` projects the deepest that many layers of each snapshot
    (0: all); ``projector_backlog`` snapshots of a layer may wait before the oldest is skipped.
    ``projector_engine`` runs the projecting in a pool of worker processes ("pool", the default:
    the server's GIL stays with ingest), a thread of the server ("thread") or Ray actors ("ray",
    extra ``sentrycam[ray]``, ``RAY_ADDRESS`` or a local Ray); ``projector_workers`` sizes the
    pool (None: one per core, at most 4); ``projector_threads``: compute threads (torch, numba,
    BLAS) of each pool worker (None: cores / workers) or of the server process with the thread
    engine (None: left as they are); ``projector_priority`` "lowest" runs the projector at the
    lowest CPU priority (pool workers in Linux's idle class, the thread engine at nice 19), as
    the server that ``attach`` or ``sentrycam demo`` starts beside the training does.
    ``projector_yield`` holds each projector job while less than about one core is free (training
    that fills every core), for at most ``projector_yield_max_wait_s`` since it was queued or
    since the previous job (see :mod:`sentrycam.backend.projection_pacing`; Linux only); None,
    the default, turns it on exactly where ``projector_priority`` is "lowest".
    """

    model_config = SettingsConfigDict(env_prefix="SENTRYCAM_", extra="forbid",
                                      validate_default=True)

    db_path: Path
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    token: str | None = Field(None, repr=False)  # never in logs or tracebacks
    read_token: str | None = Field(None, repr=False)
    token_file: Path | None = None
    read_token_file: Path | None = None
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    idle_timeout_s: float = Field(0.0, ge=0.0)
    info_file: Path | None = None
    ingest_queue: int = Field(10_000, ge=1)
    batch_max: int = Field(500, ge=1)
    batch_wait_s: float = Field(0.02, gt=0.0, le=10.0)
    retention_max_snapshots: int | None = Field(20, ge=0)
    retention_history: int = Field(4, ge=0)
    projector: bool = True
    projector_device: str = "auto"
    projector_drain_s: float = Field(15.0, ge=0.0)
    projector_max_layers: int = Field(2, ge=0)
    projector_backlog: int = Field(12, ge=1)
    projector_engine: Literal["thread", "pool", "ray"] = "pool"
    projector_workers: int | None = Field(None, ge=1)
    projector_threads: int | None = Field(None, ge=1)
    projector_priority: Literal["normal", "lowest"] = "normal"
    projector_yield: bool | None = None
    projector_yield_max_wait_s: float = Field(DEFAULT_MAX_WAIT_S, gt=0.0)
    audit: bool = True
    audit_engine: Literal["process", "thread"] = "process"
    alert_webhook_url: str | None = None
    alert_webhook_min_severity: int = Field(3, ge=1, le=3)
    # Bounds of ingest (see :mod:`sentrycam.backend.routes.ingest_ws`). ``max_frame_bytes``:
    # the largest frame taken (trainers send snapshots in row chunks of CHUNK_TARGET_BYTES);
    # ``ingest_max_bytes``: frame bytes received and not yet committed, over every
    # connection, before ingest stops reading; ``ws_ping_interval_s`` / ``ws_ping_timeout_s``:
    # the websocket keepalive (None: no pings); ``store_memory_limit``: DuckDB's memory limit
    # (its cache of the file and its queries; beyond it DuckDB evicts and spills to disk).
    max_frame_bytes: int = Field(4 * CHUNK_TARGET_BYTES, ge=1024)
    ingest_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    ws_ping_interval_s: float | None = Field(20.0, gt=0.0)
    ws_ping_timeout_s: float | None = Field(KEEPALIVE_TIMEOUT_S, gt=0.0)
    store_memory_limit: str | None = Field("256MB", pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$")

    @field_validator("host")
    @classmethod
    def _host_not_blank(cls, host: str) -> str:
        if not host.strip():
            raise ValueError("host must not be empty; use 127.0.0.1 for this machine only")
        return host.strip()

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return _comma_separated(value)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_are_names(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            if not host_name(host) or (any(c in host for c in "/:@ ") and not _is_ipv6(host)):
                raise ValueError(f"allowed host {host!r} must be a bare host name or address "
                                 "(no scheme, port or path), e.g. team.example.com")
        return tuple(host_name(host) for host in hosts)

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            if parse_origin(origin) is None:
                raise ValueError(f"allowed origin {origin!r} must look like "
                                 "https://team.example.com[:port] (scheme and host, no path)")
        return origins

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_is_http(cls, url: str | None) -> str | None:
        if not url:
            return None
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"alert_webhook_url must be an http:// or https:// URL, got {url!r}")
        return url

    @field_validator("token", "read_token")
    @classmethod
    def _blank_token_is_none(cls, token: str | None) -> str | None:
        # An empty SENTRYCAM_TOKEN= in a shell means "no token", not "the empty token".
        return token if token else None

    @model_validator(mode="after")
    def _check_exposure_and_fill_defaults(self) -> "ServerSettings":
        self.token = self._token_from_file(self.token, self.token_file, "token")
        self.read_token = self._token_from_file(self.read_token, self.read_token_file,
                                                "read token")
        if not is_loopback(self.host) and self.token is None:
            raise ValueError(f"refusing to bind {self.host!r} without a token: set "
                             "SENTRYCAM_TOKEN or --token-file when binding a non-loopback "
                             "address")
        if self.read_token is not None and self.token is None:
            raise ValueError("a read token needs a write token too (SENTRYCAM_TOKEN or "
                             "--token-file): without one, anyone could write")
        if self.read_token is not None and self.read_token == self.token:
            raise ValueError("the read token must differ from the write token")
        if self.info_file is None:
            self.info_file = info_file_path(self.db_path)
        return self

    @staticmethod
    def _token_from_file(token: str | None, path: Path | None, what: str) -> str | None:
        if path is None:
            return token
        if token is not None:
            raise ValueError(f"give the {what} or the {what} file, not both")
        return _first_line(path, what)

    @property
    def retention(self) -> RetentionSettings:
        """The store's retention policy from the ``retention_*`` settings."""
        from sentrycam.backend.store.retention import RetentionSettings

        return RetentionSettings(max_snapshots=self.retention_max_snapshots or None,
                                 history=self.retention_history)

    @property
    def projector_cpu(self) -> CpuShare:
        """The projector's threads and priority from the ``projector_*`` settings."""
        from sentrycam.backend.projection_work import CpuShare

        return CpuShare(threads=self.projector_threads,
                        lowest=self.projector_priority == "lowest")

    @property
    def projector_yield_wait_s(self) -> float | None:
        """The longest a projector job waits for free CPU; None where it does not wait."""
        on = (self.projector_priority == "lowest" if self.projector_yield is None
              else self.projector_yield)
        return self.projector_yield_max_wait_s if on else None

    @property
    def token_required(self) -> bool:
        return self.token is not None

    @property
    def url(self) -> str:
        """Where this server is reached from its own machine (``http://127.0.0.1:PORT`` for a
        loopback or wildcard bind): the address its own dashboard sessions call."""
        return server_url(self.host, self.port)

    @property
    def served_hosts(self) -> frozenset[str]:
        """Host names (no port) this server answers to: loopback names, the bind address
        unless it is a wildcard, and ``allowed_hosts``."""
        bound = () if self.host in WILDCARD_HOSTS else (host_name(self.host),)
        return frozenset((*LOOPBACK_HOSTS, *bound, *self.allowed_hosts))

    @property
    def extra_origins(self) -> frozenset[Origin]:
        """``allowed_origins`` as compared (scheme, host, port)."""
        return frozenset(filter(None, map(parse_origin, self.allowed_origins)))


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:
        return False
