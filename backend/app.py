"""The FastAPI application: routes, host/origin and token guards, activity tracking, and the
ingest lifecycle.

``create_app(settings)`` builds an app whose lifespan opens the store (unless one is given),
starts the :class:`~sentrycam.backend.ingest.IngestWriter`, and on shutdown drains the writer and
closes the store it opened. Everything the routes need lives in ``app.state``:
``settings``, ``store``, ``writer``, ``hub`` (the push hub), ``feed`` (the
:class:`~sentrycam.backend.feed.ChangeFeed` that announces what was stored), ``activity``,
``started_at`` (epoch seconds), ``started_monotonic``, ``projection``, and the audit's parts;
routes receive them through the typed dependencies of :mod:`sentrycam.backend.routes.parts`,
the only readers of ``app.state``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse

import sentrycam
from sentrycam.backend.activity import Activity, ActivityTracker
from sentrycam.backend.auth import OPEN_PATHS, TokenGuard
from sentrycam.backend.origin import HostOriginGuard
from sentrycam.backend.feed import ChangeFeed
from sentrycam.backend.hub import PushHub
from sentrycam.backend.ingest import IngestWriter
from sentrycam.backend.audit.service import start_audit, stop_audit
from sentrycam.backend.projection import ProjectionWorker
from sentrycam.backend.routes import (audit, derived, health, incidents, ingest_ws, pages,
                                      projector, push_ws, runs, storage)
from sentrycam.backend.routes.errors import Problem, document_guards, guard_refusals
from sentrycam.backend.settings import WILDCARD_HOSTS, ServerSettings
from sentrycam.backend.store import Store, StoreUnavailableError, UnknownRunError
from sentrycam.protocol.redaction import redacting_logger

log = logging.getLogger(__name__)

#: Loggers that write request URLs and (at DEBUG) handshake headers, tokens included.
URL_LOGGERS = ("uvicorn.error", "uvicorn.access",
               # the page's Location model logs the browser's URL (href, search) at DEBUG
               "panel.viewable.Location")
#: How long shutdown waits for queued messages to reach the store.
DRAIN_TIMEOUT_S = 60.0


def open_store(settings: ServerSettings) -> Store:
    """Open the settings' database read-write with their retention policy."""
    return Store(settings.db_path, retention=settings.retention,
                 memory_limit=settings.store_memory_limit)


def create_app(settings: ServerSettings, store: Store | None = None) -> FastAPI:
    """Build the server app. A ``store`` passed in stays open after shutdown (its owner closes
    it); without one, the lifespan opens ``settings.db_path`` and closes it on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        app.state.store = open_store(settings) if own_store else store
        writer = IngestWriter(app.state.store, queue_size=settings.ingest_queue,
                              batch_max=settings.batch_max, batch_wait_s=settings.batch_wait_s,
                              feed=app.state.feed, max_bytes=settings.ingest_max_bytes)
        writer.start()
        app.state.writer = writer
        app.state.hub = PushHub(app.state.store, app.state.feed)
        app.state.hub.start()
        start_audit(app.state, settings)
        app.state.projection = None
        if settings.projector:
            app.state.projection = ProjectionWorker(
                app.state.store, app.state.feed, device=settings.projector_device,
                max_layers=settings.projector_max_layers, max_backlog=settings.projector_backlog,
                engine=settings.projector_engine, workers=settings.projector_workers,
                cpu=settings.projector_cpu, yield_max_wait_s=settings.projector_yield_wait_s)
            app.state.projection.start()
        log.info("sentrycam server ready: db %s", settings.db_path)
        try:
            yield
        finally:
            app.state.hub.stop()
            # Stopping drains the queue; run it off the loop so shutdown stays responsive.
            await asyncio.to_thread(writer.stop, DRAIN_TIMEOUT_S)
            if app.state.projection is not None:  # after the writer: it feeds the projector
                await asyncio.to_thread(app.state.projection.stop, settings.projector_drain_s)
            await asyncio.to_thread(stop_audit, app.state)
            if own_store:
                app.state.store.close()

    app = FastAPI(title="sentrycam", version=sentrycam.__version__, lifespan=lifespan,
                  description="Live capture of neural-network training: ingest, runs, dashboard.")
    app.state.settings = settings
    app.state.activity = Activity()
    app.state.feed = ChangeFeed()
    app.state.started_at = time.time()
    app.state.started_monotonic = time.monotonic()
    for module in (health, runs, derived, audit, incidents, ingest_ws, push_ws, projector,
                   storage):
        app.include_router(module.router)
    pages.mount_dashboard(app, settings)
    app.add_exception_handler(UnknownRunError, _unknown_run)
    app.add_exception_handler(StoreUnavailableError, _store_unavailable)
    document_guards(app, functools.partial(
        guard_refusals, token=settings.token is not None,
        read_token=settings.read_token is not None, open_paths=OPEN_PATHS | pages.OPEN_PATHS))
    for name in URL_LOGGERS:
        redacting_logger(name)
    # Middleware added later wraps what was added before: a request meets the activity
    # tracker (refused requests count as activity too), then the Host/Origin guard (a foreign
    # page learns nothing, not even whether a token is needed), then the token guard.
    if settings.token:
        app.add_middleware(TokenGuard, token=settings.token, read_token=settings.read_token,
                           open_paths=OPEN_PATHS | pages.OPEN_PATHS,
                           open_prefixes=pages.OPEN_PREFIXES)
    app.add_middleware(HostOriginGuard, hosts=settings.served_hosts,
                       origins=settings.extra_origins)
    if settings.host in WILDCARD_HOSTS and not settings.allowed_hosts:
        log.warning("bound to %r but no --allowed-host given: only requests naming this "
                    "machine's loopback names are served", settings.host)
    app.add_middleware(ActivityTracker, activity=app.state.activity)
    return app


async def _unknown_run(request: Any, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content=Problem(detail=str(exc)).model_dump())


async def _store_unavailable(request: Any, exc: Exception) -> JSONResponse:
    """A read met a storage failure (the database invalidated, being reopened): 503 with the
    reason, never a 500; /health says when it is over."""
    return JSONResponse(status_code=503, content=Problem(detail=str(exc)).model_dump())
