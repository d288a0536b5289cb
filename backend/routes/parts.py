"""The server's parts, as typed FastAPI dependencies for the routes.

:func:`sentrycam.backend.app.create_app` keeps each part in ``app.state``; these functions are
the only readers of it. A route names what it uses in its signature (``store: StoreDep``), so
its type is checked and a test can see what it depends on.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from sentrycam.backend.activity import Activity
from sentrycam.backend.audit.engine import AuditEngine
from sentrycam.backend.audit.relay import AlertRelay
from sentrycam.backend.feed import ChangeFeed
from sentrycam.backend.hub import PushHub
from sentrycam.backend.ingest import IngestWriter
from sentrycam.backend.projection import ProjectionWorker
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.store import Store


def get_settings(connection: HTTPConnection) -> ServerSettings:
    return connection.app.state.settings


def get_store(connection: HTTPConnection) -> Store:
    return connection.app.state.store


def get_writer(connection: HTTPConnection) -> IngestWriter:
    return connection.app.state.writer


def get_hub(connection: HTTPConnection) -> PushHub:
    return connection.app.state.hub


def get_feed(connection: HTTPConnection) -> ChangeFeed:
    return connection.app.state.feed


def get_activity(connection: HTTPConnection) -> Activity:
    return connection.app.state.activity


def get_audit(connection: HTTPConnection) -> AuditEngine | None:
    """The audit engine; None when the ``audit`` setting turned it off."""
    return connection.app.state.audit


def get_alert_relay(connection: HTTPConnection) -> AlertRelay | None:
    """The relay of alerts to ingest connections; None without the audit engine."""
    return connection.app.state.alert_relay


def get_projector(connection: HTTPConnection) -> ProjectionWorker | None:
    """The resident projector worker; None when the ``projector`` setting turned it off."""
    return connection.app.state.projection


def get_started_monotonic(connection: HTTPConnection) -> float:
    """When the app was built, on :func:`time.monotonic`'s clock (seconds)."""
    return connection.app.state.started_monotonic


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
WriterDep = Annotated[IngestWriter, Depends(get_writer)]
HubDep = Annotated[PushHub, Depends(get_hub)]
FeedDep = Annotated[ChangeFeed, Depends(get_feed)]
ActivityDep = Annotated[Activity, Depends(get_activity)]
AuditDep = Annotated[AuditEngine | None, Depends(get_audit)]
AlertRelayDep = Annotated[AlertRelay | None, Depends(get_alert_relay)]
ProjectorDep = Annotated[ProjectionWorker | None, Depends(get_projector)]
StartedDep = Annotated[float, Depends(get_started_monotonic)]
